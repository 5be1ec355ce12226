"""keras_app.monitor: a usage log against its operating point's reference; alerts on drift,
quiet without; the page in a real browser; exit 1 on an alert, 2 on bad input."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from keras_app import monitor as monitor_cli
from keras_app.artifacts import runs
from keras_app.artifacts.op_history import OperatingPointHistory
from keras_app.core.cli import run_cli
from keras_app.inference.usage_log import UsageLog
from tests.keras_app.reports.test_model_card import chromium, open_in_chromium  # noqa: F401

RNG = np.random.default_rng(0)
DAY = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)


def reference_scores(n):
    return RNG.beta(0.4, 0.4, n)  # calibrated scores: most near 0 or 1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder whose version 1 has its reference recorded (no model is loaded)."""
    path = tmp_path_factory.mktemp("monitored") / "run"
    path.mkdir()
    (path / runs.CONFIG).write_text(json.dumps({"model": "simple_cnn", "image_size": [32, 32]}))
    (path / runs.LABELS).write_text("NORMAL\nPNEUMONIA\n")
    (path / runs.BEST).write_bytes(b"model")
    op = {"positive_class": "PNEUMONIA", "threshold": 0.5, "version": 1}
    (path / runs.OPERATING_POINT).write_text(json.dumps(op))
    scores = reference_scores(400)
    OperatingPointHistory(path).write_reference(
        1,
        {"split": "val", "scores": scores.tolist(), "prevalence": 0.5,
         "positive_rate": float(np.mean(scores >= 0.5)), "n": 400},
    )  # fmt: skip
    return path


def write_log(path, scores, *, days=3, version=1, guard=None, latency=300.0, band=None):
    """`scores` spread over `days` days, one line each (a study of one image); inside `band`
    (low, high) the decision is "refer"."""
    log = UsageLog(path, key=b"k" * 32, source="dicom_node")
    for i, score in enumerate(scores):
        log.record(
            study_uid=f"1.2.{i}",
            instance_uid=f"1.2.{i}.1",
            model="run",
            operating_point_version=version,
            positive_class="PNEUMONIA",
            probability=float(score),
            decision="refer"
            if band and band[0] <= score < band[1]
            else "PNEUMONIA"
            if score >= 0.5
            else "NORMAL",
            guard=guard,
            latency_ms=latency,
            time=DAY + timedelta(days=i % days, minutes=i),
        )
    return path


def run_monitor(log, run, out, *extra):
    return run_cli(monitor_cli.main, [str(log), "--reference", str(run), "--out", str(out), *extra])


def test_the_same_population_is_quiet(run, tmp_path, capsys):
    log = write_log(tmp_path / "usage.jsonl", reference_scores(300))
    write_log(log, reference_scores(40), version=2)  # another version's lines: left out
    assert run_monitor(log, run, tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert record["alerts"] == [] and record["left_out"] == {"operating point v2": 40}
    assert [d["studies"] for d in record["days"]] == [100, 100, 100]
    assert "ok         score PSI" in capsys.readouterr().out
    assert run_monitor(log, run, tmp_path / "out") == 0  # a rerun replaces its own folder


def test_tensorboard_scalars_per_day(run, tmp_path):
    import tensorflow as tf

    log = write_log(tmp_path / "usage.jsonl", reference_scores(300))
    run_monitor(log, run, tmp_path / "out")
    tags = set()
    for event_file in (tmp_path / "out" / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {value.tag for value in event.summary.value}
    assert {"usage/studies_per_day", "drift/score_psi", "decisions/positive_rate"} <= tags
    assert {"latency/p95_ms", "usage/not_analysed_rate"} <= tags


def test_a_shifted_site_alerts_and_the_page_says_so(run, tmp_path, chromium, capsys):  # noqa: F811
    shifted = np.clip(reference_scores(300) * 0.3 + 0.7, 0, 1)  # every film reads positive
    log = write_log(tmp_path / "usage.jsonl", shifted)
    assert run_monitor(log, run, tmp_path / "out") == monitor_cli.ALERT
    record = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert {"psi", "ks", "positive_rate"} <= set(record["alerts"])
    assert "alert:" in capsys.readouterr().err
    dom, asked, _ = open_in_chromium(chromium, tmp_path / "out" / "monitor.html", tmp_path)
    assert asked == set()
    assert "ALERT" in dom and "score PSI" in dom and "0.25" in dom


def test_the_refer_rate_is_counted_and_referrals_keep_the_positive_rate(run, tmp_path):
    scores = reference_scores(300)
    quiet = write_log(tmp_path / "quiet.jsonl", scores)
    banded = write_log(tmp_path / "banded.jsonl", scores, band=(0.3, 0.7))
    for log, out in ((quiet, "quiet"), (banded, "banded")):
        assert run_monitor(log, run, tmp_path / out) == 0
    quiet, banded = (
        json.loads((tmp_path / o / "monitor.json").read_text()) for o in ("quiet", "banded")
    )
    # A referred image counts as the threshold calls it: the same positive rate either way.
    assert [d["positive_rate"] for d in banded["days"]] == [
        d["positive_rate"] for d in quiet["days"]
    ]
    inside = (scores >= 0.3) & (scores < 0.7)
    referred = sum(d["refer_rate"] * d["analysed"] for d in banded["days"])
    assert round(referred) == inside.sum() and {d["refer_rate"] for d in quiet["days"]} == {0.0}


def test_refused_images_and_slow_answers_alert(run, tmp_path):
    log = write_log(tmp_path / "usage.jsonl", reference_scores(200), latency=8000.0)
    write_log(log, reference_scores(30), guard=False)
    assert run_monitor(log, run, tmp_path / "out") == monitor_cli.ALERT
    alerts = json.loads((tmp_path / "out" / "monitor.json").read_text())["alerts"]
    assert set(alerts) == {"not_analysed", "latency_p95"}


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"time": "2026-11-20T09:00:00Z", "status": "analysed"}\n{oops\n', "usage.jsonl:2"),
        ("", "no line answered at operating point version 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, content, words, capsys):
    log = tmp_path / "usage.jsonl"
    log.write_text(content)
    assert run_monitor(log, run, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_a_foreign_output_folder_is_refused(run, tmp_path, capsys):
    log = write_log(tmp_path / "usage.jsonl", reference_scores(60))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert run_monitor(log, run, tmp_path / "out") == 2
    assert "not a monitor's" in capsys.readouterr().err


def test_the_operations_figure_draws_the_refer_rate_only_for_a_point_with_a_band():
    from types import SimpleNamespace

    from keras_app.decision.operating_point import OperatingPoint
    from keras_app.reports.monitor_page import operations_figure

    days = [
        {"day": f"2026-12-0{i}", "not_analysed_rate": 0.01, "refer_rate": 0.05 * i}
        | {"latency_p50": 10.0, "latency_p95": 20.0}
        for i in (1, 2)
    ]
    point = {"positive_class": "PNEUMONIA", "threshold": 0.5}
    for band, lines, title in (
        ({}, 1, "Not analysed per day"),
        ({"low": 0.3, "high": 0.7}, 2, "Not analysed and referred per day"),
    ):
        op = OperatingPoint(**point, refer_band=band)
        found = SimpleNamespace(days=days, reference=SimpleNamespace(operating_point=op))
        left = operations_figure(found).axes[0]
        assert len(left.lines) == lines and left.get_title() == title
    np.testing.assert_allclose(left.lines[1].get_ydata(), [0.05, 0.1])
