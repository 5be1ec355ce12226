"""keras_app.model_card: the page's sections from a real run, and the page in a real browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pytest

from keras_app.core.errors import UsageError
from keras_app.reports import model_card
from tests.makers import write_folder

# Sections of Mitchell et al. (2019), and what the issue adds, as the page titles them.
KEY_SECTIONS = (
    "Model details",
    "Intended use",
    "Not for diagnostic use",
    "Factors",
    "Metrics",
    "Evaluation data",
    "Training data",
    "How the split was made (patient grouping)",
    "Quantitative analyses",
    "Calibration",
    "External validations",
    "Grad-CAM examples",
    "Training curves",
    "Environment",
    "Reproduce",
    "Ethical considerations",
    "Caveats and recommendations",
)
# Chromium's own background calls (updates, time, accounts) are not the page's: a page's
# requests carry the file:// page as their network isolation key.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # a page that tried to fetch would fail, not leak
    "--virtual-time-budget=3000",
    "--window-size=1000,2400",
)


@pytest.fixture(scope="module")
def run_with_eval(tmp_path_factory):
    """A real tiny two-class run (the chest X-ray layout) and an evaluation of it."""
    from keras_app.evaluate import main as evaluate
    from keras_app.train import main as train

    root = tmp_path_factory.mktemp("card")
    data = write_folder(root / "xray", n_per_class=16, size=32)
    run = root / "run"
    train(
        ["--model", "simple_cnn", "--data", str(data), "--run-dir", str(run)]
        + ["--image-size", "32", "--head-epochs", "2", "--fine-tune-epochs", "0"]
        + ["--batch-size", "8", "--augment", "none"]
    )
    evaluate([str(run), "--gradcam", "2"])
    return run


@pytest.fixture(scope="module")
def card(run_with_eval):
    path = model_card.write_model_card(run_with_eval)
    return path, path.read_text()


@pytest.mark.slow
def test_run_card_has_every_section_filled_from_the_run(card, run_with_eval):
    path, page = card
    assert path == run_with_eval / "report.html"
    for title in KEY_SECTIONS:
        assert html_text(title) in page, title
    env = json.loads((run_with_eval / "environment.json").read_text())
    op = json.loads((run_with_eval / "operating_point.json").read_text())
    assert env["data"]["fingerprint"] in page
    assert f"{op['threshold']:.4f}" in page
    assert "95% CI" in page and "patient" in page
    assert "python -m keras_app.train --model simple_cnn" in page
    assert "python -m keras_app.evaluate" in page
    assert "eval-test-xray" in page  # the evaluation, listed among the validations


@pytest.mark.slow
def test_page_is_self_contained(card):
    _, page = card
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 3  # curves, reliability, Grad-CAM
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.slow
def test_what_the_run_did_not_record_reads_not_recorded(run_with_eval, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run_with_eval, bare, ignore=shutil.ignore_patterns("eval-*", "logs"))
    (bare / "curves.png").unlink()
    (bare / "environment.json").unlink()
    page = model_card.write_model_card(bare).read_text()
    assert "curves.png is absent" in page
    assert "no evaluation folder (eval-*) in this folder yet" in page
    assert page.count("not recorded") > 10  # Python, split sizes, fingerprint, demographics...


def test_text_is_escaped():
    section = model_card.Section("A <b>").p("<script>alert(1)</script>").kv([("x&y", "<i>")])
    page = model_card.render("t<", [section])
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "A &lt;b&gt;" in page and "x&amp;y" in page and "&lt;i&gt;" in page


@pytest.mark.slow
def test_evaluation_ensemble_and_sweep_folders_get_a_card(run_with_eval, tmp_path):
    evaluation = model_card.write_model_card(run_with_eval / "eval-test-xray").read_text()
    assert html_text("Not for diagnostic use") in evaluation and "internal validation" in evaluation

    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    metrics = json.loads((run_with_eval / "metrics.json").read_text())
    config = {
        "model": "ensemble",
        "class_names": ["NORMAL", "PNEUMONIA"],
        "weights": "mean",
        "members": [{"name": "a", "model": "simple_cnn", "run": str(run_with_eval), "weight": 1}],
        "command": {"runs": [str(run_with_eval)], "out": str(ensemble), "weights": "mean"},
    }
    (ensemble / "config.json").write_text(json.dumps(config))
    (ensemble / "metrics.json").write_text(json.dumps({k: metrics[k] for k in ("val", "test")}))
    page = model_card.write_model_card(ensemble).read_text()
    assert "Members against the ensemble" in page and "comparison.png is absent" in page
    assert f"python -m keras_app.ensemble {run_with_eval} --out {ensemble}" in page

    sweep = tmp_path / "sweep"
    shutil.copytree(run_with_eval, sweep / "lr0.001")
    plan = {
        "command": ["python", "-m", "keras_app.sweep", "--grid", "lr=1e-3"],
        "sweep": {"grid": [["lr", ["1e-3"]]], "ranges": [], "budget_minutes": 30},
        "trials": [{"name": "lr0.001", "overrides": {"lr": 0.001}}],
        "best": {"name": "lr0.001", "val_auc": 1.0},
    }
    (sweep / "sweep.json").write_text(json.dumps(plan))
    (sweep / "sweep.csv").write_text("name,status,val_auc\nlr0.001,finished,1.0\n")
    page = model_card.write_model_card(sweep).read_text()
    assert "python -m keras_app.sweep --grid lr=1e-3" in page
    assert "Training data (chosen run lr0.001)" in page


def test_a_folder_of_another_kind_is_refused(tmp_path):
    with pytest.raises(UsageError, match="not a finished run"):
        model_card.write_model_card(tmp_path)


# --- in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (make test installs it where it runs as root)")
    return path


def open_in_chromium(chromium, page, out):
    """Opens `page`; returns (the DOM, the URLs the page itself asked the network for)."""
    netlog = out / "netlog.json"
    shot = out / "screenshot.png"
    common = [chromium, *CHROMIUM_FLAGS, f"--log-net-log={netlog}"]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    subprocess.run(
        [*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120
    )
    events = json.loads(netlog.read_text())["events"]
    asked = {
        e["params"]["url"]
        for e in events
        if "url" in e.get("params", {})
        and "file://" in str(e["params"].get("network_isolation_key", ""))
        and not e["params"]["url"].startswith(("file:", "data:"))
    }
    return dom, asked, shot


def test_the_network_check_catches_a_page_that_fetches(chromium, tmp_path):
    leak = tmp_path / "leak.html"
    leak.write_text('<img src="http://leak.invalid/x.png"><img src="https://b.invalid/y.png">')
    _, asked, _ = open_in_chromium(chromium, leak, tmp_path)
    assert asked == {"http://leak.invalid/x.png", "https://b.invalid/y.png"}


@pytest.mark.slow
def test_card_in_headless_chromium(chromium, card, tmp_path):
    from PIL import Image

    path, _ = card
    dom, asked, shot = open_in_chromium(chromium, path, tmp_path)
    assert asked == set()
    for title in ("Model details", "Intended use", "Training data", "Grad-CAM examples"):
        assert title in dom
    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert image.size == (1000, 2400) and high - low > 100  # not a blank page
    assert len(image.getcolors(maxcolors=1 << 16)) > 20


def html_text(text: str) -> str:
    import html

    return html.escape(text)
