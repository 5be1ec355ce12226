"""The DICOM node (keras_app.dicom_node): a Storage SCP, its spool worker, the answers.

Each received image is written to the spool before the C-STORE is acknowledged;
a worker thread answers what the spool holds, study by study: it predicts, and
stores in the PACS a Comprehensive SR and, for a Keras model, a Grad-CAM overlay
(keras_app.hospital.results). Failures are retried with back-off; what is
pending when the node stops is answered when it starts again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom

from keras_app.artifacts.runs import RunFolder
from keras_app.core.errors import UsageError
from keras_app.hospital.pacs import Backoff
from keras_app.hospital.reading import IMAGE_CLASSES, Image, Skipped, first_line, read_image
from keras_app.hospital.results import (
    Finding,
    ResultUids,
    build_overlay,
    build_sr,
)
from keras_app.hospital.spool import Spool

log = logging.getLogger("keras_app.dicom_node")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the PACS keeps the instance and retries


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
        from keras_app.decision.metrics import positive_index

        # Every predictor answers with its decisions and the operating point that made them
        # (a served model in its outputs): the SR records the same whatever serves it.
        scores = self.predictor.predict_bytes([i.png for i in images])
        labels = list(scores.labels or self.predictor.class_names)
        pos = positive_index(labels, scores.positive_class)
        return [
            Finding(
                present=decision == labels[pos],
                probability=float(probs[pos]),
                threshold=scores.threshold,
                model_name=self.predictor.name,
                model_version=self.version,
                operating_point_version=scores.operating_point_version,
            )
            for probs, decision in zip(scores.probabilities, scores.decisions, strict=True)
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
        from keras_app.decision.metrics import positive_index
        from keras_app.evaluation.gradcam import explain, render_overlay

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
            log.warning("cannot answer %s: %s", image.header.get("SOPInstanceUID"), first_line(err))
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
            log.warning("will retry %d image(s): %s", len(images), first_line(err))
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
            log.error("could not spool %s: %s", uid, first_line(err))
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
