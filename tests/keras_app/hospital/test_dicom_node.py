"""keras_app.dicom_node against a real PACS: Orthanc on loopback, no mocks.

Orthanc sends studies to the node by C-STORE (REST /modalities/{id}/store); the
node answers into Orthanc; the answers are read back from Orthanc and checked
against Predictor.predict_bytes on the same pixels.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest

from keras_app import dicom_node as dicom_node_cli
from keras_app.core.cli import run_cli
from keras_app.hospital import reading
from keras_app.hospital import worker as node_worker
from keras_app.hospital.answers import Analyser, log
from keras_app.hospital.node import DicomNode
from keras_app.hospital.pacs import Backoff, Caller, CStoreSender, Pacs, PacsError
from keras_app.hospital.results import MANUFACTURER, NOT_FOR_DIAGNOSTIC_USE, read_sr
from keras_app.hospital.spool import Spool
from keras_app.hospital.web import answer_dicomweb_study, dicomweb_client, http_session
from keras_app.inference.usage_log import UsageLog
from tests.keras_app.hospital import orthanc as orthanc_mod
from tests.keras_app.hospital import xray_dicom
from tests.keras_app.hospital.conftest import assert_no_patient
from tests.keras_app.inference.test_export import write_run

NODE_AET = "KERASAPP"
MODALITY = "kerasapp"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
ALLOW = [Caller("ORTHANC", "127.0.0.1", frozenset({"127.0.0.1"}))]
WAIT = 180  # seconds: the test machine is shared; an answer takes well under one

needs_orthanc = pytest.mark.skipif(
    orthanc_mod.missing_reason() is not None, reason=str(orthanc_mod.missing_reason())
)
needs_xrays = pytest.mark.skipif(
    not xray_dicom.DATA.is_dir(), reason=f"chest X-rays not found at {xray_dicom.DATA}"
)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_port():
    return orthanc_mod.free_port()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, node_port):
    """A running Orthanc that knows the node as modality `kerasapp`."""
    reason = orthanc_mod.missing_reason()
    if reason:
        pytest.skip(reason)
    server = orthanc_mod.Orthanc(
        tmp_path_factory.mktemp("orthanc"), {MODALITY: (NODE_AET, "127.0.0.1", node_port)}
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def xrays():
    """Four real X-rays as DICOM: (file bytes, displayed pixels encoded) per variant."""
    if not xray_dicom.DATA.is_dir():
        pytest.skip(f"chest X-rays not found at {xray_dicom.DATA}")
    files = xray_dicom.xray_files(len(xray_dicom.VARIANTS))
    return {
        variant: xray_dicom.make_xray(f, variant, accession=f"ACC{i}")
        for i, (variant, f) in enumerate(zip(xray_dicom.VARIANTS, files, strict=True))
    }


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, xrays):
    """A tiny untrained run whose threshold splits the four X-rays two and two."""
    from keras_app.inference.predictor import open_predictor

    run = write_run(tmp_path_factory.mktemp("dicom_model") / "run")
    probs = open_predictor(run).predict_bytes([shown for _, shown in xrays.values()])
    p = np.sort(probs.probabilities[:, 1])
    op = {"positive_class": "PNEUMONIA", "threshold": float((p[1] + p[2]) / 2)}
    (run / "operating_point.json").write_text(json.dumps(op))
    return open_predictor(run)


@pytest.fixture
def node(tmp_path, predictor, pacs, node_port):
    """The node on its port, answering into Orthanc; stopped after the test."""
    store = CStoreSender(Pacs("127.0.0.1", pacs.dicom_port, pacs.ae_title), NODE_AET)
    running = DicomNode(
        Spool(tmp_path / "spool"),
        Analyser(predictor),
        store,
        ae_title=NODE_AET,
        port=node_port,
        allow=ALLOW,
        backoff=Backoff(0.2, 1.0),
    ).start()
    yield running
    running.stop()


def upload(pacs, *files: bytes) -> str:
    """Uploads files of one study; returns Orthanc's study ID."""
    return [pacs.upload(f) for f in files][-1]["ParentStudy"]


def uid_of(data: bytes, keyword: str = "StudyInstanceUID") -> str:
    import io

    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).get(keyword))


def results(pacs, study_uid: str) -> list[pydicom.Dataset]:
    return [d for d in pacs.instances(study_uid) if d.get("Manufacturer") == MANUFACTURER]


def wait_results(pacs, study_uid: str, n: int) -> list[pydicom.Dataset]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = results(pacs, study_uid)
        if len(found) >= n:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{n} results expected in study {study_uid}; found {len(found)}")


def study_lines(caplog, accession: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == log.name and r.getMessage().startswith(f"{accession}  ")
    ]


# --- the command line (no TensorFlow, no Orthanc) ------------------------------------------------


PUSH = ["--model", "m", "--pacs", "h:1:A", "--allow", "ORTHANC"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model", "m", "--allow", "X"], "where do answers go?"),
        (["--model", "m", "--pacs", "host:104", "--allow", "X"], "--pacs must be HOST:PORT:AET"),
        ([*PUSH, "--ae-title", "X" * 17], "AE title"),
        (["--model", "m", "--study", "1.2"], "--study needs --dicomweb"),
        ([*PUSH, "--port", "0"], "--port must be in 1..65535"),
        (["--model", "m", "--server", "http://x", "--pacs", "h:1:A"], "not allowed with"),
        (["--model", "m", "--pacs", "h:1:A"], "--allow AET[@HOST] is required"),
        (["--model", "m", "--pacs", "h:1:A", "--no-listen"], "--no-listen leaves no intake"),
        ([*PUSH, "--allow", "BAD\\AET"], "AE title"),
        ([*PUSH, "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        ([*PUSH, "--tls-cert", "no.pem", "--tls-key", "no.pem"], "TLS: cannot load"),
        ([*PUSH, "--spool-max-mb", "0"], "--spool-max-mb must be >= 1"),
        ([*PUSH, "--http-user", "u"], "--http-user and --http-password-file go together"),
        ([*PUSH, "--header-policy", "/nonexistent.json"], "cannot read it as JSON"),
        ([*PUSH, "--pacs-tls", "--dicomweb", "http://x"], "one of them"),
    ],
)
def test_bad_flags_one_line_exit_2(argv, words, capsys):
    try:
        code = run_cli(dicom_node_cli.main, argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.count("\n") == 1


# --- the spool -----------------------------------------------------------------------------------


def test_spool_is_keyed_by_uid_and_remembers_answers(tmp_path):
    spool = Spool(tmp_path)
    assert spool.put("1.2.3", lambda f: f.write(b"x"))
    assert not spool.put("1.2.3", lambda f: f.write(b"y"))  # pending: one item
    [path] = spool.pending()
    assert path.read_bytes() == b"x" and not list((tmp_path / "tmp").iterdir())
    spool.finish(path)
    assert not spool.put("1.2.3", lambda f: f.write(b"z"))  # answered: not again
    assert spool.pending() == []
    with pytest.raises(ValueError, match="not a DICOM UID"):
        spool.put("../evil", lambda f: None)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["tmp", "incoming", "done", "failed", "1.2.3"]
    )  # nothing written outside the spool, nothing for the refused UID


def test_spool_refuses_past_its_size_and_keeps_what_it_sets_aside(tmp_path):
    from keras_app.hospital.spool import SpoolFull

    spool = Spool(tmp_path, max_bytes=10)
    assert spool.put("1.1", lambda f: f.write(b"x" * 12))
    with pytest.raises(SpoolFull, match="spool full: it holds 0.0 MB"):
        spool.put("1.2", lambda f: f.write(b"y"))
    [path] = spool.pending()
    kept = spool.set_aside(path, "not analysed: view position LL is not PA or AP")
    assert kept.read_bytes() == b"x" * 12 and spool.is_done("1.1")
    assert "view position LL" in (tmp_path / "failed" / "1.1.txt").read_text()
    with pytest.raises(SpoolFull):  # what failed/ keeps counts until a human clears it
        spool.put("1.2", lambda f: f.write(b"y"))
    assert Spool(tmp_path, max_bytes=10).used_bytes == spool.used_bytes


# --- round trips through Orthanc -----------------------------------------------------------------


@needs_orthanc
@needs_xrays
def test_round_trip_sr_and_overlay_match_predict(pacs, node, xrays, predictor, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    studies = [upload(pacs, data) for data, _ in xrays.values()]
    pacs.send(MODALITY, studies)
    expected = predictor.predict_bytes([shown for _, shown in xrays.values()])
    assert set(expected.decisions) == {"NORMAL", "PNEUMONIA"}  # both findings exercised
    for i, (variant, (data, _)) in enumerate(xrays.items()):
        found = wait_results(pacs, uid_of(data), 2)
        [sr] = [d for d in found if d.SOPClassUID == SR_CLASS]
        [sc] = [d for d in found if d.SOPClassUID == SC_CLASS]
        answer = read_sr(sr)
        tolerance = 0.02 if variant == "jpeg" else 1e-4  # two JPEG decoders may differ by 1
        assert answer["probability"] == pytest.approx(expected.probabilities[i, 1], abs=tolerance)
        assert answer["present"] == (expected.decisions[i] == "PNEUMONIA"), variant
        assert answer["threshold"] == pytest.approx(predictor.operating_point.threshold)
        assert answer["model_name"] == predictor.name and answer["model_version"]
        assert answer["statement"] == NOT_FOR_DIAGNOSTIC_USE
        assert answer["source"] == uid_of(data, "SOPInstanceUID")
        assert sr.SeriesInstanceUID == sc.SeriesInstanceUID != uid_of(data, "SeriesInstanceUID")
        assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.shape[-1] == 3
        assert min(sc.pixel_array.shape[:2]) >= 512 and sc.BurnedInAnnotation == "YES"
        assert sc.pixel_array.std() > 10  # an image, a map and a title, not a flat panel
        # The node logs its line once the PACS has acknowledged both objects: just after
        # they show there, so give it a moment.
        deadline = time.monotonic() + 10
        while not study_lines(caplog, f"ACC{i}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(study_lines(caplog, f"ACC{i}")) == 1
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name.startswith("keras"))


@needs_orthanc
@needs_xrays
def test_duplicate_send_yields_one_result(pacs, node, xrays, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    data, _ = xray_dicom.make_xray(xray_dicom.xray_files(1)[0], "cr", accession="DUP1")
    study = upload(pacs, data)
    pacs.send(MODALITY, [study])
    wait_results(pacs, uid_of(data), 2)
    pacs.send(MODALITY, [study])
    time.sleep(3)  # the worker settles in 0.3 s: a second answer would be here by now
    assert len(results(pacs, uid_of(data))) == 2
    assert len(study_lines(caplog, "DUP1")) == 1


@needs_orthanc
@needs_xrays
def test_a_non_image_is_skipped_and_an_image_without_pixels_not_analysed(pacs, node, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    image, _ = xray_dicom.make_xray(xray_dicom.xray_files(1)[0], "cr", accession="MIX1")
    no_pixels = xray_dicom.make_no_pixels(image, accession="MIX1")
    study = upload(pacs, xray_dicom.make_non_image(image, accession="MIX1"), no_pixels, image)
    pacs.send(MODALITY, [study])  # synchronous: Orthanc's job fails if the node refused any
    found = wait_results(pacs, uid_of(image), 3)
    time.sleep(2)
    assert len(results(pacs, uid_of(image))) == len(found) == 3  # SR + overlay, one SR
    [refused] = [
        read_sr(d) for d in found if d.SOPClassUID == SR_CLASS and not read_sr(d)["analysed"]
    ]
    assert refused["source"] == uid_of(no_pixels, "SOPInstanceUID")
    assert refused["reason"] == "modality OT is not CR or DX"
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped) == 1 and "not an image (Basic Text SR Storage)" in skipped[0], skipped
    assert len(study_lines(caplog, "MIX1")) == 2  # the finding, the image not analysed


@needs_orthanc
@needs_xrays
def test_every_refused_image_gets_a_not_analysed_sr(pacs, node, caplog):
    """Issue 26: a lateral DX, a Secondary Capture of a CT, a CT image, a multi-frame, an RGB
    image, a header claiming 65535 x 65535 and a JPEG cut at 40%: each answered in the PACS
    by one SR that says "not analysed" and why, no finding, no overlay; kept in failed/."""
    caplog.set_level(logging.INFO, logger=log.name)
    jpeg = xray_dicom.xray_files(1)[0]
    sent = {
        kind: xray_dicom.make_refused(jpeg, kind, accession=f"NA-{kind}")
        for kind in xray_dicom.REFUSED
    }
    pacs.send(MODALITY, [upload(pacs, data) for data in sent.values()])
    for kind, data in sent.items():
        [sr] = wait_results(pacs, uid_of(data), 1)
        answer = read_sr(sr)
        assert sr.SOPClassUID == SR_CLASS and answer["analysed"] is False, kind
        assert xray_dicom.REFUSED[kind][1] in answer["reason"], (kind, answer["reason"])
        assert "present" not in answer and "probability" not in answer
        assert answer["source"] == uid_of(data, "SOPInstanceUID")
        assert answer["model_name"] == node.worker.analyser.predictor.name
        assert answer["statement"] == NOT_FOR_DIAGNOSTIC_USE
    time.sleep(1)
    for kind, data in sent.items():
        assert len(results(pacs, uid_of(data))) == 1, kind  # no overlay, one SR
        uid = uid_of(data, "SOPInstanceUID")
        failed = node.spool.root / "failed"
        assert uid_of((failed / f"{uid}.dcm").read_bytes(), "SOPInstanceUID") == uid
        assert xray_dicom.REFUSED[kind][1] in (failed / f"{uid}.txt").read_text()
        [line] = study_lines(caplog, f"NA-{kind}")
        assert "not analysed: " in line and uid in line


@needs_orthanc
@needs_xrays
def test_stopped_before_answering_then_restarted_answers_once(
    tmp_path, pacs, predictor, node_port, caplog
):
    caplog.set_level(logging.INFO, logger=log.name)
    data, _ = xray_dicom.make_xray(xray_dicom.xray_files(2)[1], "cr", accession="RST1")
    spool = Spool(tmp_path / "spool")
    # First life: the PACS cannot be reached for answers, so the instance stays pending.
    unreachable = CStoreSender(Pacs("127.0.0.1", orthanc_mod.free_port(), "ORTHANC"), NODE_AET)
    first = DicomNode(
        spool,
        Analyser(predictor),
        unreachable,
        ae_title=NODE_AET,
        port=node_port,
        allow=ALLOW,
        backoff=Backoff(0.2, 0.5),
    ).start()
    try:
        pacs.send(MODALITY, [upload(pacs, data)])
        assert len(spool.pending()) == 1  # spooled before the C-STORE was acknowledged
        time.sleep(1)
    finally:
        first.stop()
    assert results(pacs, uid_of(data)) == [] and len(spool.pending()) == 1
    # Second life: the pending instance is answered on start, once.
    store = CStoreSender(Pacs("127.0.0.1", pacs.dicom_port, pacs.ae_title), NODE_AET)
    second = DicomNode(
        spool, Analyser(predictor), store, ae_title=NODE_AET, port=node_port, allow=ALLOW
    ).start()
    try:
        wait_results(pacs, uid_of(data), 2)
        time.sleep(3)
    finally:
        second.stop()
    assert len(results(pacs, uid_of(data))) == 2 and spool.pending() == []
    assert len(study_lines(caplog, "RST1")) == 1


@needs_orthanc
@needs_xrays
def test_dicomweb_study(pacs, predictor):
    fresh, _ = xray_dicom.make_xray(xray_dicom.xray_files(3)[2], "jpeg", accession="WEB1")
    upload(pacs, fresh)
    client = dicomweb_client(pacs.dicomweb, http_session())
    [answer] = answer_dicomweb_study(Analyser(predictor), client, uid_of(fresh))
    found = results(pacs, uid_of(fresh))
    [sr] = [d for d in found if d.SOPClassUID == SR_CLASS]
    assert len(found) == 2
    assert read_sr(sr)["probability"] == pytest.approx(answer.finding.probability, abs=1e-6)


@needs_orthanc
@needs_xrays
def test_a_referred_image_is_answered_into_the_pacs_as_indeterminate(pacs, predictor):
    """An image inside the refer band: its SR in the PACS states the probability and the
    threshold, Pneumonia = Indeterminate and why a reader decides; no Present or Absent."""
    import dataclasses

    from keras_app.inference.predictor import KerasPredictor

    # A band over every probability: whatever the untrained model answers is referred.
    band = {"low": 0.0, "high": 1.0, "share": 0.5}
    op = dataclasses.replace(predictor.operating_point, refer_band=band)
    referring = KerasPredictor(
        predictor.keras_model, predictor.class_names, path=predictor.path, operating_point=op
    )
    fresh, _ = xray_dicom.make_xray(xray_dicom.xray_files(2)[1], "cr", accession="REFER1")
    upload(pacs, fresh)
    client = dicomweb_client(pacs.dicomweb, http_session())
    analyser = Analyser(referring, overlays=False)
    [answer] = answer_dicomweb_study(analyser, client, uid_of(fresh))
    [sr] = [d for d in results(pacs, uid_of(fresh)) if d.SOPClassUID == SR_CLASS]
    found = read_sr(sr)
    assert found["analysed"] and found["present"] is None
    assert found["refer"].startswith("P(PNEUMONIA) ") and found["refer"].endswith("decides")
    assert found["probability"] == pytest.approx(answer.finding.probability, abs=1e-6)
    assert found["threshold"] == pytest.approx(op.threshold)
    assert answer.finding.verdict == "refer"


def start_cli(args: list[str], log_path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "keras_app.dicom_node", *args], stdout=log, stderr=log
        )


def wait_listening(port: int, process: subprocess.Popen, log_path) -> None:
    """Until the node answers a C-ECHO (it loads the model first)."""
    from pynetdicom import AE

    ae = AE(ae_title="PROBE")
    ae.add_requested_context("1.2.840.10008.1.1")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.5)
    raise AssertionError(f"the node did not listen in {WAIT} s:\n{log_path.read_text()}")


@needs_orthanc
@needs_xrays
@pytest.mark.slow
def test_cli_killed_before_answering_answers_once_after_restart(
    tmp_path, pacs, predictor, node_port
):
    data, _ = xray_dicom.make_xray(xray_dicom.xray_files(4)[3], "cr", accession="KILL1")
    common = ["--model", str(predictor.path), "--ae-title", NODE_AET, "--port", str(node_port)]
    common += ["--spool", str(tmp_path / "spool"), "--allow", "ORTHANC", "--allow", "PROBE"]
    log_path = tmp_path / "node.log"
    dead = f"127.0.0.1:{orthanc_mod.free_port()}:{pacs.ae_title}"
    first = start_cli([*common, "--pacs", dead], log_path)
    try:
        wait_listening(node_port, first, log_path)
        pacs.send(MODALITY, [upload(pacs, data)])
    finally:
        first.kill()  # SIGKILL: no clean-up runs
        first.wait()
    assert results(pacs, uid_of(data)) == []
    assert len(list((tmp_path / "spool" / "incoming").glob("*.dcm"))) == 1
    live = f"127.0.0.1:{pacs.dicom_port}:{pacs.ae_title}"
    second = start_cli([*common, "--pacs", live], log_path)
    try:
        wait_results(pacs, uid_of(data), 2)
        time.sleep(3)
    finally:
        second.terminate()
        second.wait()
    assert len(results(pacs, uid_of(data))) == 2
    lines = [line for line in log_path.read_text().splitlines() if " KILL1  " in line]
    assert len(lines) == 1 and "pneumonia" in lines[0] and lines[0].endswith(" ms"), lines
    assert_no_patient(log_path.read_text())


@needs_orthanc
@needs_xrays
def test_cli_dicomweb_study(pacs, predictor, caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    data, _ = xray_dicom.make_xray(xray_dicom.xray_files(6)[5], "monochrome1", accession="WEB2")
    upload(pacs, data)
    argv = ["--model", str(predictor.path), "--dicomweb", pacs.dicomweb, "--study", uid_of(data)]
    assert run_cli(dicom_node_cli.main, argv) == 0
    assert len(results(pacs, uid_of(data))) == 2
    assert len(study_lines(caplog, "WEB2")) == 1


# --- pixels --------------------------------------------------------------------------------------


@needs_xrays
@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_syntaxes_decode_to_the_same_pixels(syntax):
    import io

    import pydicom.uid

    data, shown = xray_dicom.make_xray(xray_dicom.xray_files(1)[0], "cr", accession="Z1")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(getattr(pydicom.uid, syntax))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    image = reading.read_image(buffer.getvalue())
    assert image.png == reading.read_image(data).png


@needs_xrays
@pytest.mark.parametrize("variant", ["cr", "dx16"])
def test_jpeg_lossless_decodes_to_the_same_pixels(variant):
    """JPEG Lossless, process 14 SV1 (what most CR and DX modalities send), 8 and 16 bits."""
    import io

    import imagecodecs  # its libjpeg-turbo 3 encodes lossless JPEG; pydicom only decodes it
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    data, _ = xray_dicom.make_xray(xray_dicom.xray_files(1)[0], variant, accession="Z4")
    ds = pydicom.dcmread(io.BytesIO(data))
    frame = imagecodecs.jpeg8_encode(
        ds.pixel_array, lossless=True, predictor=1, bitspersample=ds.BitsStored
    )
    assert b"\xff\xc3" in frame  # SOF3: a lossless frame, not a baseline one
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert reading.read_image(buffer.getvalue()).png == reading.read_image(data).png


def test_what_is_skipped_and_what_is_not_analysed():
    from keras_app.decision.header_policy import HeaderPolicy

    with pytest.raises(reading.NotAnalysed, match="modality OT is not CR or DX"):
        reading.read_image(xray_dicom.make_no_pixels(accession="Z2"))
    with pytest.raises(reading.NotAnalysed, match="pixel data not readable"):
        reading.read_image(
            xray_dicom.make_no_pixels(accession="Z2"), HeaderPolicy(modalities=("OT",), min_side=1)
        )
    with pytest.raises(reading.Skipped, match="not an image"):
        reading.read_image(xray_dicom.make_non_image(accession="Z3"))
    with pytest.raises(reading.Skipped, match="not readable DICOM"):
        reading.read_image(b"not dicom at all")


# --- the worker, with a stand-in analyser and store (no model, no PACS) --------------------------


class _StandInAnalyser:
    """Finds pneumonia in every image it reads; no answer can be built for accession BAD."""

    def answer(self, readings):
        from keras_app.hospital.answers import Answer
        from keras_app.hospital.results import Finding

        answers = []
        for item in readings:
            header = item.header
            if header.AccessionNumber == "BAD":
                answers.append(Answer(header, [], error="no SR can be built from its header"))
            elif isinstance(item, reading.NotAnalysed):
                answers.append(Answer(header, [header], ("stand-in", "1"), reason=item.reason))
            else:
                finding = Finding(True, 0.9, 0.5, "stand-in", "1")
                answers.append(Answer(header, [header], ("stand-in", "1"), finding=finding))
        return answers

    def wants_overlay(self, answer):
        return answer.finding is not None

    def draw_overlays(self, items):
        overlays = []
        for _, answer in items:
            overlay = pydicom.Dataset()
            overlay.AccessionNumber = f"{answer.header.AccessionNumber}-overlay"
            overlays.append(overlay)
        return overlays


@needs_xrays
def test_worker_retries_a_failed_store_and_sets_aside_what_it_does_not_analyse(tmp_path):
    spool = Spool(tmp_path)
    files = xray_dicom.xray_files(3)
    sent = [
        xray_dicom.make_xray(files[i], "cr", accession=a)[0] for i, a in enumerate(("GOOD", "BAD"))
    ]
    sent.append(xray_dicom.make_refused(files[2], "lateral", accession="SIDE"))
    for data in sent:
        spool.put(uid_of(data, "SOPInstanceUID"), lambda f, d=data: f.write(d))
    stored, records, down = [], [], [True]

    def store(datasets):
        if down[0]:
            raise PacsError("PACS down")
        stored.extend(datasets)

    usage = UsageLog(tmp_path / "usage.jsonl", key=b"k" * 32, source="dicom_node")
    worker = node_worker.Worker(
        spool, _StandInAnalyser(), store, on_record=lambda f: records.append(usage.record(**f))
    )
    assert not worker.drain() and len(spool.pending()) == 3  # nothing lost while down
    down[0] = False
    assert worker.drain() and spool.pending() == []
    # The finding first, its overlay after; what is not analysed has no overlay.
    assert [d.AccessionNumber for d in stored] in (
        ["GOOD", "SIDE", "GOOD-overlay"],
        ["SIDE", "GOOD", "GOOD-overlay"],
    )
    assert sorted(p.suffix for p in (tmp_path / "failed").iterdir()) == [
        ".dcm",
        ".dcm",
        ".txt",
        ".txt",
    ]
    assert len(list((tmp_path / "done").iterdir())) == 3
    # One usage record per answered image: hashed UIDs, no patient data.
    assert sorted(r["status"] for r in records) == ["analysed", "not_analysed"]
    for record in records:
        assert len(record["instance"]) == 24 and record["latency_ms"] >= 0
        assert_no_patient(json.dumps(record))
        assert uid_of(sent[0], "SOPInstanceUID") not in json.dumps(record)


def test_worker_batches_whole_settled_studies(tmp_path):
    spool = Spool(tmp_path)
    studies = [[xray_dicom.make_no_pixels(accession=f"S{i}")] for i in range(3)]
    studies[1].append(xray_dicom.make_no_pixels(studies[1][0], accession="S1"))
    for study in studies:
        for data in study:
            spool.put(uid_of(data, "SOPInstanceUID"), lambda f, d=data: f.write(d))
    worker = node_worker.Worker(
        spool, _StandInAnalyser(), lambda d: None, batch=2, settle=60, poll=99
    )
    paths, wait = worker.ready()
    assert paths == [] and 59 < wait <= 60  # nothing settled yet: look again when it is
    assert len(worker.ready(settle=0)[0]) == 1  # study 0; study 1 (2 images) does not fit
    worker.batch = 1
    spool.finish(worker.ready(settle=0)[0][0])
    assert len(worker.ready(settle=0)[0]) == 2  # a study larger than a batch goes whole


def test_jpeg_extended_12_bit_decodes():
    """pydicom's own JPEG Extended (process 4, 12-bit) Secondary Capture test file."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("JPGExtended.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's JPGExtended.dcm test file is not installed")
    from keras_app.decision.header_policy import HeaderPolicy

    with open(path, "rb") as f:
        data = f.read()
    header = pydicom.dcmread(path, stop_before_pixels=True)
    policy = HeaderPolicy(
        modalities=(str(header.Modality),), body_parts=(str(header.BodyPartExamined),)
    )
    image = reading.read_image(data, policy)
    assert image.grey.shape == (1024, 256, 1) and image.grey.std() > 10
