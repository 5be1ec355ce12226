"""python -m keras_app.dicom_node: the classifier as a DICOM node inside a hospital's PACS.

    python -m keras_app.dicom_node --model saved_models/pneumonia --ae-title KERASAPP \\
        --port 11112 --pacs pacs.example:4242:ORTHANC --spool /var/spool/kerasapp
    python -m keras_app.dicom_node --model saved_models/pneumonia \\
        --dicomweb http://pacs.example:8042/dicom-web --study 1.2.840...

As a Storage SCP (pynetdicom) it accepts CR, DX and Secondary Capture images by
C-STORE. Each is written to the spool before the C-STORE is acknowledged; a
worker thread answers what the spool holds: it predicts, and C-STOREs to the
PACS a Comprehensive SR and, for a Keras model, a Grad-CAM overlay, both in the
image's study (keras_app.dicom_results). Prediction or storage failures are
retried with exponential back-off; what is pending when the node stops is
answered when it starts again. Other objects are acknowledged, logged and
skipped, so a PACS routing a whole study is never refused.

With --dicomweb it answers one study instead: QIDO-RS and WADO-RS to read it,
STOW-RS to store the results.

Logging: one line per answered study (accession or study UID, finding,
probability, milliseconds); warnings for what is skipped or retried.
TensorFlow is imported only once the flags are parsed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from keras_app.dicom_results import (
    MANUFACTURER,
    Finding,
    ResultUids,
    build_overlay,
    build_sr,
)
from keras_app.dicom_spool import Spool
from keras_app.errors import ArgumentParser, UsageError, run_cli
from keras_app.runs import RunFolder
from keras_app.runtime import import_tensorflow

log = logging.getLogger("keras_app.dicom_node")

CR = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMAGE_CLASSES = {
    CR: "CR",
    DX_PRESENTATION: "DX",
    DX_PROCESSING: "DX",
    SECONDARY_CAPTURE: "SC",
    "1.2.840.10008.5.1.4.1.1.7.2": "SC (multi-frame grey, byte)",
    "1.2.840.10008.5.1.4.1.1.7.3": "SC (multi-frame grey, word)",
}
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the PACS keeps the instance and retries
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash


class Skipped(Exception):
    """An instance the node does not answer: not an image, no pixels, our own result."""

    def __init__(self, reason: str, *, quiet: bool = False):
        super().__init__(reason)
        self.quiet = quiet  # our own results coming back: expected, not worth a warning


class PacsError(RuntimeError):
    """The PACS could not be reached or refused a result: retried with back-off."""


# --- reading what was received -------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One received image ready to predict: its header, its grey pixels and their PNG."""

    header: pydicom.Dataset
    grey: np.ndarray  # uint8 [h, w, 1] as the model's training data looks
    png: bytes


def read_image(data: bytes) -> Image:
    """A received instance as an `Image`.

    Pixels go through `data_pipelines.dicom.read_dicom`: the modality and VOI LUTs,
    MONOCHROME1 inverted; compressed transfer syntaxes decode through the pydicom
    pixel plugins (pylibjpeg and its JPEG, JPEG 2000 and RLE decoders).

    Raises:
        Skipped: not an image, no pixel data, undecodable, or a keras-app result.
    """
    from data_pipelines.dicom import read_dicom

    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 (any parse failure means: not readable DICOM)
        raise Skipped(f"not readable DICOM ({_first_line(err)})") from None
    if str(header.get("Manufacturer", "")) == MANUFACTURER:
        raise Skipped("a keras-app result", quiet=True)
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class not in IMAGE_CLASSES:
        raise Skipped(f"not a CR, DX or Secondary Capture image (SOP class {sop_class})")
    try:
        grey = read_dicom(data)
    except Exception as err:  # noqa: BLE001 (no pixels, unsupported syntax, corrupt data)
        raise Skipped(f"pixels not readable ({_first_line(err)})") from None
    if grey.shape[-1] != 1:
        raise Skipped(f"not a grey image ({grey.shape[-1]} samples per pixel)")
    return Image(header, grey, _png(grey))


def _png(grey: np.ndarray) -> bytes:
    from PIL import Image as PilImage

    buffer = io.BytesIO()
    PilImage.fromarray(grey[..., 0]).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


# --- answering -----------------------------------------------------------------------------------


class Analyser:
    """Predicts images and builds the datasets that answer them.

    Args:
        predictor: a `keras_app.inference.Predictor` (local model or TF Serving).
        overlays: draw Grad-CAM overlays (needs `predictor.keras_model`).
    """

    def __init__(self, predictor, *, overlays: bool = True):
        self.predictor = predictor
        self.overlays = overlays and predictor.keras_model is not None
        self.version = model_version(predictor)

    def findings(self, images: Sequence[Image]) -> list[Finding]:
        """The model's answer for each image (a server being down raises here)."""
        from keras_app.metrics import positive_index

        scores = self.predictor.predict_bytes([i.png for i in images])
        op = self.predictor.operating_point
        labels = list(scores.labels or self.predictor.class_names)
        pos = positive_index(labels, op.positive_class)
        decisions = scores.decisions or self.predictor.decide(scores.probabilities)
        return [
            Finding(
                present=decision == labels[pos],
                probability=float(probs[pos]),
                threshold=op.threshold,
                model_name=self.predictor.name,
                model_version=self.version,
            )
            for probs, decision in zip(scores.probabilities, decisions, strict=True)
        ]

    def results(self, image: Image, finding: Finding) -> list[pydicom.Dataset]:
        """The SR and, for a Keras model, the Grad-CAM overlay answering one image."""
        uids = ResultUids.for_source(image.header, finding.model_key)
        answer = [build_sr(image.header, finding, uids)]
        if self.overlays:
            answer.append(build_overlay(image.header, self._overlay(image, finding), uids))
        return answer

    def _overlay(self, image: Image, finding: Finding) -> np.ndarray:
        """The Grad-CAM of the pneumonia evidence, drawn readable: the finding, P(pneumonia),
        a colour bar, the image at least 512 px; a map with no evidence says so."""
        from keras_app.gradcam import explain, render_overlay
        from keras_app.metrics import positive_index

        names = self.predictor.class_names
        # Always the positive class: where the evidence for pneumonia lies (its margin over
        # NORMAL, so the map has signal whichever way the finding went).
        pos = positive_index(names, self.predictor.operating_point.positive_class)
        found = explain(self.predictor.keras_model, self.predictor.decode([image.png]), pos)
        title = (
            f"{names[pos]} {'present' if finding.present else 'absent'}  "
            f"P({names[pos]})={finding.probability:.3f}\n"
            f"map: evidence for {names[pos]}; not for diagnostic use"
        )
        return render_overlay(np.repeat(image.grey, 3, axis=-1), found.heatmaps[0], title)


def model_version(predictor) -> str:
    """An export's version number, the served version, or a digest of the weights file."""
    if predictor.kind == "saved_model":
        return Path(predictor.path).name
    if predictor.kind == "serving":
        version = getattr(predictor.client, "version", None)
        return str(version) if version is not None else "latest"
    path = Path(predictor.path)
    weights = path if path.is_file() else RunFolder(path).best
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else ""
    return f"sha256:{digest}" if digest else "unknown"


@dataclass(frozen=True)
class Pacs:
    """Where results are C-STOREd: `HOST:PORT:AET`."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> Pacs:
        host, _, rest = text.rpartition(":")
        host, _, port = host.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--pacs must be HOST:PORT:AET. Received --pacs={text!r}")
        return cls(host, int(port), check_ae_title(rest, "--pacs"))


def check_ae_title(value: str, flag: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise UsageError(
            f"{flag}: an AE title is 1 to 16 printable characters, no backslash. Received {value!r}"
        )
    return value


class CStoreSender:
    """Stores result datasets in the PACS by C-STORE, one association per study."""

    def __init__(self, pacs: Pacs, ae_title: str, *, timeout: float = 30.0):
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE
        from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

        self.pacs = pacs
        self.ae = AE(ae_title=ae_title)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout
        for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            self.ae.add_requested_context(
                sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )

    def __call__(self, datasets: Sequence[pydicom.Dataset]) -> None:
        """Raises PacsError when the PACS is unreachable or refuses any of them."""
        pacs = self.pacs
        assoc = self.ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title)
        if not assoc.is_established:
            raise PacsError(f"no association with {pacs.ae_title}@{pacs.host}:{pacs.port}")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warning
                    raise PacsError(
                        f"{pacs.ae_title} refused {ds.SOPInstanceUID}: status "
                        f"{'none' if code is None else hex(code)}"
                    )
        finally:
            assoc.release()


class Backoff:
    """Exponential back-off: first, 2*first, 4*first ... up to `most` seconds."""

    def __init__(self, first: float = 1.0, most: float = 60.0):
        if not 0 < first <= most:
            raise ValueError(f"need 0 < first <= most. Received first={first}, most={most}")
        self.first, self.most = first, most
        self.delay = first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self.delay = self.first


def answer_study(
    analyser: Analyser,
    store: Callable[[Sequence[pydicom.Dataset]], None],
    images: Sequence[Image],
    *,
    unanswerable: Callable[[Image], object] | None = None,
) -> list[Finding]:
    """Predicts a study's images, stores every answer, logs the study's line.

    Args:
        analyser: predicts and builds the answers.
        store: stores the answers in the PACS.
        images: one study's images.
        unanswerable: called with each image whose answer cannot be built (a header
            the SR or overlay cannot be made from): retrying would not help.

    Returns:
        The findings of the images answered.

    Raises:
        Exception: from the predictor or `store`; nothing is marked answered then.
    """
    start = time.perf_counter()
    findings = analyser.findings(images)
    answered, datasets = [], []
    for image, finding in zip(images, findings, strict=True):
        try:
            datasets += analyser.results(image, finding)
        except Exception as err:  # noqa: BLE001 (reported per image; the others still go)
            log.warning(
                "cannot answer %s: %s", image.header.get("SOPInstanceUID"), _first_line(err)
            )
            if unanswerable is not None:
                unanswerable(image)
            continue
        answered.append(finding)
    if datasets:
        store(datasets)
        log_study(images[0].header, answered, (time.perf_counter() - start) * 1000)
    return answered


def log_study(header: pydicom.Dataset, findings: Sequence[Finding], ms: float) -> None:
    """The one line per study: present if any image is, with the highest probability."""
    study = str(header.get("AccessionNumber") or "") or str(header.get("StudyInstanceUID"))
    present = any(f.present for f in findings)
    probability = max(f.probability for f in findings)
    images = f" ({len(findings)} images)" if len(findings) > 1 else ""
    log.info(
        "%s  pneumonia %s  p=%.3f  %.0f ms%s",
        study,
        "present" if present else "absent",
        probability,
        ms,
        images,
    )


# --- the spool worker ----------------------------------------------------------------------------


class Worker(threading.Thread):
    """Answers what the spool holds, study by study, retrying failures with back-off.

    Args:
        spool: the node's spool.
        analyser: predicts and builds the answers.
        store: stores a study's answers in the PACS (raises on failure).
        backoff: delays between retries after a failure.
        settle: seconds without a new instance before a study is answered, so the
            images of one study sent together are answered (and logged) together.
        poll: seconds between looks at the spool when nothing wakes the worker.
    """

    def __init__(
        self,
        spool: Spool,
        analyser: Analyser,
        store: Callable[[Sequence[pydicom.Dataset]], None],
        *,
        backoff: Backoff | None = None,
        settle: float = 0.3,
        poll: float = 2.0,
    ):
        super().__init__(name="dicom-node-worker", daemon=True)
        self.spool, self.analyser, self.store = spool, analyser, store
        self.backoff = backoff or Backoff()
        self.settle, self.poll = settle, poll
        self._wake, self._halt = threading.Event(), threading.Event()
        self._last_arrival = 0.0

    def wake(self) -> None:
        """Called on each received instance."""
        self._last_arrival = time.monotonic()
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        while not self._halt.is_set():
            self._wait_for_quiet()
            if self._halt.is_set():
                return
            if not self.drain():
                self._halt.wait(self.backoff.next())
            else:
                self.backoff.reset()
                self._wake.wait(self.poll)
            self._wake.clear()

    def _wait_for_quiet(self) -> None:
        while time.monotonic() - self._last_arrival < self.settle and not self._halt.is_set():
            time.sleep(self.settle / 3)

    def drain(self) -> bool:
        """Answers every pending study; False when one failed and must be retried."""
        for paths in group_by_study(self.spool.pending()):
            if self._halt.is_set():
                return True
            images = self._read(paths)
            if images and not self._answer(images):
                return False
        return True

    def _read(self, paths: Sequence[Path]) -> dict[Path, Image]:
        images = {}
        for path in paths:
            try:
                images[path] = read_image(path.read_bytes())
            except Skipped as why:
                (log.debug if why.quiet else log.warning)("skipped %s: %s", path.stem, why)
                self.spool.finish(path)
        return images

    def _answer(self, images: dict[Path, Image]) -> bool:
        failed: list[Image] = []
        try:
            answer_study(
                self.analyser, self.store, list(images.values()), unanswerable=failed.append
            )
        except Exception as err:  # noqa: BLE001 (PACS or model server down: retried later)
            log.warning("will retry %d image(s): %s", len(images), _first_line(err))
            return False
        failed_ids = {id(image) for image in failed}  # identity: images hold arrays
        for path, image in images.items():
            (self.spool.fail if id(image) in failed_ids else self.spool.finish)(path)
        return True


def group_by_study(paths: Sequence[Path]) -> list[list[Path]]:
    """Pending files grouped by StudyInstanceUID, in order of each study's first file."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        try:
            header = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]
            )
            study = str(header.get("StudyInstanceUID", path.stem))
        except Exception:  # noqa: BLE001 (read_image says why, per file)
            study = path.stem
        groups.setdefault(study, []).append(path)
    return list(groups.values())


# --- the Storage SCP -----------------------------------------------------------------------------


class DicomNode:
    """The Storage SCP and its worker: `start()` listens, `stop()` ends both.

    Args:
        spool: where received instances wait for their answer.
        analyser: predicts and builds answers.
        store: stores answers in the PACS (a `CStoreSender`).
        ae_title, host, port: what the node listens as.
        backoff: retry delays for the worker.
    """

    def __init__(
        self,
        spool: Spool,
        analyser: Analyser,
        store: Callable[[Sequence[pydicom.Dataset]], None],
        *,
        ae_title: str = "KERASAPP",
        host: str = "127.0.0.1",
        port: int = 11112,
        backoff: Backoff | None = None,
    ):
        self.spool = spool
        self.worker = Worker(spool, analyser, store, backoff=backoff)
        self.ae_title, self.host, self.port = ae_title, host, port
        self._server = None

    def start(self) -> DicomNode:
        """Listens for associations; pending spool items are answered at once."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True  # answer only associations addressed to this node
        # Every storage class is accepted so that a PACS sending a whole study (reports,
        # key images) is not refused; non-images are then acknowledged and skipped.
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            (self.host, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        self.worker.start()
        self.worker.wake()
        return self

    def stop(self) -> None:
        """Stops listening and working; what is still pending stays in the spool."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.worker.stop()
        self.worker.join(timeout=60)

    def _on_store(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        sop_class = str(event.request.AffectedSOPClassUID)
        if sop_class not in IMAGE_CLASSES:
            log.warning("skipped %s: not a CR, DX or Secondary Capture image (%s)", uid, sop_class)
            return SUCCESS
        try:
            self.spool.put(uid, lambda f: f.write(event.encoded_dataset(include_meta=True)))
        except (OSError, ValueError) as err:
            log.error("could not spool %s: %s", uid, _first_line(err))
            return OUT_OF_RESOURCES
        self.worker.wake()
        return SUCCESS

    def __enter__(self) -> DicomNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- DICOMweb ------------------------------------------------------------------------------------


def answer_dicomweb_study(analyser: Analyser, url: str, study: str) -> list[Finding]:
    """Reads one study by QIDO-RS/WADO-RS, stores its answers by STOW-RS.

    Raises:
        UsageError: the study has no instances there, or none is an image the node reads.
    """
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url)
    images = []
    for found in client.search_for_instances(study_instance_uid=study):
        instance = pydicom.Dataset.from_json(found)
        ds = client.retrieve_instance(study, instance.SeriesInstanceUID, instance.SOPInstanceUID)
        try:
            images.append(read_image(_encode(ds)))
        except Skipped as why:
            (log.debug if why.quiet else log.warning)(
                "skipped %s: %s", instance.SOPInstanceUID, why
            )
    if not images:
        raise UsageError(f"study {study} at {url} holds no CR, DX or Secondary Capture image")
    return answer_study(analyser, lambda datasets: client.store_instances(list(datasets)), images)


def _encode(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


# --- the command ---------------------------------------------------------------------------------


def parse_args(argv=None):
    p = ArgumentParser(
        prog="python -m keras_app.dicom_node",
        description="Answer chest X-rays sent by a PACS with a DICOM SR and a Grad-CAM overlay.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="run folder, .keras file or exported model")
    source.add_argument("--server", help="TF Serving REST address, e.g. http://localhost:8501")
    source.add_argument("--grpc", help="TF Serving gRPC address, e.g. localhost:8500")
    p.add_argument("--name", default="pneumonia", help="model name on the TF Serving server")
    p.add_argument("--ae-title", default="KERASAPP", help="the node's AE title")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port to listen on")
    p.add_argument("--pacs", help="where results go by C-STORE: HOST:PORT:AET")
    p.add_argument("--spool", default="dicom_spool", help="folder for received instances")
    p.add_argument("--dicomweb", help="DICOMweb root URL: answer --study there, then exit")
    p.add_argument("--study", help="Study Instance UID to answer with --dicomweb")
    p.add_argument("--no-overlay", action="store_true", help="SR only, no Grad-CAM overlay")
    return p.parse_args(argv)


def check_args(args) -> None:
    """Flag combinations argparse cannot express, each a UsageError naming the flag."""
    check_ae_title(args.ae_title, "--ae-title")
    if args.dicomweb or args.study:
        if not (args.dicomweb and args.study):
            raise UsageError("--dicomweb and --study go together: a DICOMweb URL and one study")
        if args.pacs:
            raise UsageError("--pacs is for the C-STORE node; with --dicomweb results go by STOW")
        return
    if not args.pacs:
        raise UsageError("--pacs HOST:PORT:AET is required: where the results are stored")
    Pacs.parse(args.pacs)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535. Received --port={args.port}")


def open_model(args):
    from keras_app.inference import open_predictor, open_server

    if args.server or args.grpc:
        return open_server(args.server, grpc=args.grpc, name=args.name)
    return open_predictor(args.model)


def configure_logging() -> None:
    """The node's study lines at INFO; from the libraries (pynetdicom logs each association,
    highdicom each module it copies) only warnings, so a healthy run is one line a study."""
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)


def serve(args, analyser: Analyser) -> None:
    """Runs the node until interrupted."""
    store = CStoreSender(Pacs.parse(args.pacs), args.ae_title)
    node = DicomNode(
        Spool(args.spool), analyser, store, ae_title=args.ae_title, host=args.host, port=args.port
    )
    try:
        node.start()
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    try:
        threading.Event().wait()  # until Ctrl-C
    finally:
        node.stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    configure_logging()
    import_tensorflow()
    analyser = Analyser(open_model(args), overlays=not args.no_overlay)
    if args.dicomweb:
        answer_dicomweb_study(analyser, args.dicomweb, args.study)
    else:
        serve(args, analyser)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
