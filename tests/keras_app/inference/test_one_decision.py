"""One operating point, whatever serves the model: the same probability, decision, threshold
and version from a run folder, its .keras, its SavedModel, TF Serving (a REST stand-in) and
the DICOM node in front of a local model (`--model`) and of the server (`--server`)."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from keras_app.artifacts.loader import load_model
from keras_app.artifacts.runs import RunFolder
from keras_app.decision.operating_point import OperatingPoint, choose_threshold
from keras_app.hospital.node import Analyser
from keras_app.hospital.reading import read_image
from keras_app.hospital.results import read_sr
from keras_app.inference import export
from keras_app.inference.predictor import KerasPredictor, open_predictor, open_server
from keras_app.model.calibration import calibrated_model
from tests.keras_app.hospital import xray_dicom
from tests.keras_app.inference.test_export import CLASS_NAMES, write_run
from tests.keras_app.inference.test_serving_client import FakeModelServer, _handler

N = 8


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A calibrated run whose threshold falls between its images' scores, exported and
    served; the images as files a modality would send."""
    root = tmp_path_factory.mktemp("one-decision")
    run = write_run(root / "run")
    model = calibrated_model(load_model(run), 1.7)
    model.save(run / "best.keras")
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (N, 32, 32)).astype(np.uint8)
    studies = []
    for i, pixels in enumerate(grey):
        path = root / f"x{i}.png"
        Image.fromarray(pixels).save(path)
        studies.append(xray_dicom.make_xray(path, "cr", accession=f"ONE{i}"))
    pngs = [shown for _, shown in studies]
    p = KerasPredictor(model, CLASS_NAMES).predict_bytes(pngs).probabilities[:, 1]
    # Half the images above, half below: the threshold between the two middle scores.
    order = np.argsort(p)
    labels = np.zeros(N, int)
    labels[order[N // 2 :]] = 1
    op = OperatingPoint(
        temperature=1.7,
        positive_class="PNEUMONIA",
        threshold=choose_threshold(labels, p, 1.0),
        target_sensitivity=1.0,
        version=3,  # not the default 1, so that a lost version shows
    )
    RunFolder(run).write_operating_point(op)
    version_dir = export.export_model(run, "pneumonia", base=root / "saved_models")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakeModelServer(root / "saved_models")))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    yield {
        "run": run,
        "version_dir": version_dir,
        "url": f"http://127.0.0.1:{httpd.server_address[1]}",
        "studies": studies,
        "op": op,
        "labels": labels,
    }
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def answers(served) -> dict[str, tuple[np.ndarray, list[str], list[float], list[int]]]:
    """(P(PNEUMONIA), decisions, thresholds, versions) from every way the model is served."""
    pngs = [shown for _, shown in served["studies"]]
    predictors = {
        "run folder": open_predictor(served["run"]),
        ".keras": open_predictor(served["run"] / "best.keras"),
        "SavedModel": open_predictor(served["version_dir"]),
        "TF Serving (REST)": open_server(served["url"], name="pneumonia"),
    }
    out = {}
    for name, predictor in predictors.items():
        scores = predictor.predict_bytes(pngs)
        n = len(pngs)
        out[name] = (
            scores.probabilities[:, 1],
            scores.decisions,
            [scores.threshold] * n,
            [scores.operating_point_version] * n,
        )
    images = [read_image(data) for data, _ in served["studies"]]
    for name, predictor in (
        ("DICOM node --model", predictors["run folder"]),
        ("DICOM node --server", open_server(served["url"], name="pneumonia")),
    ):
        analyser = Analyser(predictor, overlays=False)
        findings = analyser.findings(images)
        srs = [read_sr(analyser.results(i, f)[0]) for i, f in zip(images, findings, strict=True)]
        out[name] = (
            np.array([sr["probability"] for sr in srs]),
            ["PNEUMONIA" if sr["present"] else "NORMAL" for sr in srs],
            [sr["threshold"] for sr in srs],
            [sr["operating_point_version"] for sr in srs],
        )
    return out


def test_every_way_of_serving_answers_alike(served):
    got = answers(served)
    assert len(got) == 6
    expected_decisions = ["PNEUMONIA" if y else "NORMAL" for y in served["labels"]]
    op = served["op"]
    for name, (probability, decisions, thresholds, versions) in got.items():
        np.testing.assert_allclose(probability, got["run folder"][0], atol=1e-5, err_msg=name)
        assert decisions == expected_decisions, name
        # The SR stores the threshold as a DICOM decimal string (16 characters).
        assert thresholds == pytest.approx([op.threshold] * N, abs=1e-9), name
        assert versions == [op.version] * N, name


def test_a_served_model_reports_its_operating_point(served):
    server = open_server(served["url"], name="pneumonia")
    assert server.operating_point.threshold is None  # nothing known before the first answer
    server.predict_bytes([served["studies"][0][1]])
    op = server.operating_point
    assert (op.positive_class, op.threshold, op.version) == (
        "PNEUMONIA",
        pytest.approx(served["op"].threshold),
        served["op"].version,
    )


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A run with an image guard whose limit passes half of the images, exported and served."""
    from keras_app.decision.guard import fit_guard
    from keras_app.inference.image_guard import guard_layers, guard_record
    from keras_app.model.guard import guard_features_model, with_guard

    root = tmp_path_factory.mktemp("one-guard")
    run = write_run(root / "run")
    classifier = calibrated_model(load_model(run), 1.0)
    rng = np.random.default_rng(3)
    fit_images = rng.integers(0, 256, (40, 32, 32, 3)).astype(np.float32)
    layers = guard_layers(classifier)
    rows = np.asarray(guard_features_model(classifier, layers)(fit_images))
    backbone = classifier.get_layer("backbone")
    dims = [int(backbone.get_layer(n).output.shape[-1]) for n in layers]
    guard = fit_guard(rows, layers=[*layers, "pool"], dims=[*dims, rows.shape[1] - sum(dims)])
    # Images unlike those it was fitted on: smooth ramps of every brightness.
    ramps = np.stack([np.full((32, 32), v, np.uint8) for v in np.linspace(0, 255, N)])
    ramps = ramps + np.arange(32, dtype=np.uint8)[None, None, :]
    pngs = []
    for i, pixels in enumerate(ramps):
        Image.fromarray(pixels).save(root / f"r{i}.png")
        pngs.append((root / f"r{i}.png").read_bytes())
    model = with_guard(classifier, guard)
    ood = np.asarray(model(KerasPredictor(model, CLASS_NAMES).decode(pngs))["ood_score"])
    order = np.sort(ood)
    limit = float((order[N // 2 - 1] + order[N // 2]) / 2)  # half pass
    model.save(run / "best.keras")
    op = OperatingPoint(guard={**guard_record(guard), "limit": limit})
    RunFolder(run).write_operating_point(op)
    version_dir = export.export_model(run, "guarded", base=root / "saved_models")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakeModelServer(root / "saved_models")))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    yield run, version_dir, f"http://127.0.0.1:{httpd.server_address[1]}", pngs, limit
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_every_way_of_serving_refuses_the_same_images(guarded):
    run, version_dir, url, pngs, limit = guarded
    answers = {
        "run folder": open_predictor(run).predict_bytes(pngs),
        ".keras": open_predictor(run / "best.keras").predict_bytes(pngs),
        "SavedModel": open_predictor(version_dir).predict_bytes(pngs),
        "TF Serving (REST)": open_server(url, name="guarded").predict_bytes(pngs),
    }
    first = answers["run folder"]
    assert sum(first.in_distribution) == N // 2  # the limit splits them in two
    for name, scores in answers.items():
        assert scores.in_distribution == first.in_distribution, name
        np.testing.assert_allclose(scores.ood_score, first.ood_score, rtol=1e-5, err_msg=name)
        assert scores.ood_limit == pytest.approx(limit), name
        refused = [scores.not_analysed(i) for i in range(N)]
        assert [r is None for r in refused] == first.in_distribution, name
        assert all("out of distribution" in r for r in refused if r), name


def test_predict_says_not_analysed_with_the_reason_and_exits_0(guarded, capsys):
    import json

    from keras_app import predict
    from keras_app.core.cli import run_cli

    run, _, _, pngs, _ = guarded
    files = sorted(run.parent.glob("r*.png"))
    assert run_cli(predict.main, [*map(str, files), "--model", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    refused = [r for r in rows if r["status"].startswith("not analysed: out of distribution")]
    assert len(refused) == N // 2
    assert all("decision" not in r and "probability" not in r for r in refused)
    assert sum(r["status"] == "ok" for r in rows) == N // 2


@pytest.fixture(scope="module")
def referring(tmp_path_factory):
    """A run whose refer band has two images' own scores as its edges (the low one inside,
    the high one outside), exported and served; the images as PNG files."""
    root = tmp_path_factory.mktemp("one-refer")
    run = write_run(root / "run")
    calibrated_model(load_model(run), 1.7).save(run / "best.keras")
    rng = np.random.default_rng(11)
    files = []
    for i, pixels in enumerate(rng.integers(0, 256, (N, 32, 32)).astype(np.uint8)):
        Image.fromarray(pixels).save(root / f"b{i}.png")
        files.append(root / f"b{i}.png")
    pngs = [f.read_bytes() for f in files]
    base = root / "saved_models"
    # The scores the exported graph itself computes (version 1 has no band): the edges are
    # float32 values the graph outputs, so the test reaches the rule's edges exactly.
    p = open_predictor(export.export_model(run, "refer", base=base)).predict_bytes(pngs)
    p = p.probabilities[:, 1]
    order = np.argsort(p)
    threshold = float((np.float64(p[order[3]]) + p[order[4]]) / 2)
    band = {"low": float(p[order[1]]), "high": float(p[order[6]]), "share": 0.5}
    op = OperatingPoint(
        temperature=1.7, positive_class="PNEUMONIA", threshold=threshold, refer_band=band
    )
    RunFolder(run).write_operating_point(op)
    version_dir = export.export_model(run, "refer", base=base)
    expected = np.zeros(N, bool)
    expected[order[1:6]] = True  # low's case inside, high's outside
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakeModelServer(base)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield {
        "run": run,
        "version_dir": version_dir,
        "url": url,
        "files": files,
        "op": op,
        "expected": expected.tolist(),
    }
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_every_way_of_serving_refers_the_same_images_band_edges_included(referring):
    pngs = [f.read_bytes() for f in referring["files"]]
    op = referring["op"]
    answers = {
        "run folder": open_predictor(referring["run"]).predict_bytes(pngs),
        ".keras": open_predictor(referring["run"] / "best.keras").predict_bytes(pngs),
        "SavedModel": open_predictor(referring["version_dir"]).predict_bytes(pngs),
        "TF Serving (REST)": open_server(referring["url"], name="refer").predict_bytes(pngs),
    }
    for name, scores in answers.items():
        # The graph's `refer` output, or NumPy's, is the one rule on the answer's own scores.
        assert scores.refer == op.referred(scores.probabilities, CLASS_NAMES).tolist(), name
        assert scores.refer == referring["expected"], name
        assert scores.refer_band == pytest.approx(op.refer_limits), name
        reasons = [scores.referred(i) for i in range(N)]
        assert [r is not None for r in reasons] == referring["expected"], name
        assert all(r.endswith("a reader decides") for r in reasons if r), name
        # The decision itself is unchanged: the band says who decides, not what the model calls.
        assert scores.decisions == answers["run folder"].decisions, name


def test_predict_says_refer_and_logs_it(referring, capsys, tmp_path, monkeypatch):
    import json

    from keras_app import predict
    from keras_app.core.cli import run_cli
    from keras_app.inference.usage_log import read_usage_log

    monkeypatch.setenv("KERAS_APP_LOG_KEY", "ab" * 32)
    files = [str(f) for f in referring["files"]]
    log = tmp_path / "usage.jsonl"
    argv = [*files, "--model", str(referring["version_dir"]), "--json", "--usage-log", str(log)]
    assert run_cli(predict.main, argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["decision"] == "refer" for r in rows] == referring["expected"]
    for row in rows:
        if row["decision"] == "refer":
            p = row["probabilities"]["PNEUMONIA"]
            assert row["status"].startswith(f"refer: P(PNEUMONIA) {p:.4g} within the refer band [")
        else:
            assert row["status"] == "ok" and row["decision"] in CLASS_NAMES
    lines = list(read_usage_log(log))
    assert [x["decision"] == "refer" for x in lines] == referring["expected"]
    assert {x["status"] for x in lines} == {"analysed"}  # a referred image is analysed


def test_the_dicom_node_answers_a_referred_image_with_an_indeterminate_sr(referring):
    from keras_app.hospital.answers import log_answers, usage_fields

    files, expected = referring["files"], referring["expected"]
    studies = [xray_dicom.make_xray(f, "cr", accession=f"REF{i}") for i, f in enumerate(files)]
    images = [read_image(data) for data, _ in studies]
    analyser = Analyser(open_predictor(referring["version_dir"]), overlays=False)
    answers = analyser.answer(images)
    srs = [read_sr(a.datasets[0]) for a in answers]
    for sr, refer in zip(srs, expected, strict=True):
        assert sr["analysed"] and sr["probability"] is not None
        if refer:
            assert sr["present"] is None and sr["refer"].endswith("a reader decides")
        else:
            assert isinstance(sr["present"], bool) and sr["refer"] is None
    log_answers(answers, 1.0)  # a study's line names "refer" (no exception, no finding)
    assert [a.finding.verdict == "refer" for a in answers] == expected
    # The usage log records "refer" for the node as for predict.
    fields = [usage_fields(a, received=0.0, answered=1.0) for a in answers]
    assert [f["decision"] == "refer" for f in fields] == expected
