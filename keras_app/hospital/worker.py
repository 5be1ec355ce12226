"""The DICOM node's spool worker: answers what the spool holds, in batches across studies.

A study is taken once it has settled (no new instance for `settle` seconds), so the
images of one study are answered together; the studies ready at one moment are
answered as one batch of up to `batch` images (one model call, one Grad-CAM pass, one
association to the PACS), so a burst is not answered one study at a time. A failure
(the model server or the PACS down) leaves the batch in the spool, retried with
back-off; an image is marked answered only once its answer is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom

from keras_app.hospital.answers import Analyser, Answer, log_answers, study_name, usage_record
from keras_app.hospital.guard import HeaderPolicy
from keras_app.hospital.pacs import Backoff
from keras_app.hospital.reading import (
    DEFAULT_POLICY,
    Image,
    NotAnalysed,
    Skipped,
    first_line,
    read_image,
)
from keras_app.hospital.spool import Spool

log = logging.getLogger("keras_app.dicom_node")

# A batch of 16 chest X-rays is one model call and one Grad-CAM pass of a few seconds on
# two cores: large enough to share the model's fixed cost across a burst, small enough
# that the first answers of a burst are stored while the rest are being worked on.
BATCH = 16


class Worker(threading.Thread):
    """Answers what the spool holds, retrying failures with back-off.

    Args:
        spool: the node's spool.
        analyser: predicts and builds the answers.
        store: stores answers in the PACS (raises on failure).
        policy: what the model reads (`guard.HeaderPolicy`).
        backoff: delays between retries after a failure.
        settle: seconds without a new instance before a study is answered.
        poll: seconds between looks at the spool when nothing wakes the worker.
        batch: the most images answered at once (a larger study goes whole).
        on_record: called with `answers.usage_record(...)` once per answered image.
    """

    def __init__(
        self,
        spool: Spool,
        analyser: Analyser,
        store: Callable[[Sequence[pydicom.Dataset]], None],
        *,
        policy: HeaderPolicy = DEFAULT_POLICY,
        backoff: Backoff | None = None,
        settle: float = 0.3,
        poll: float = 2.0,
        batch: int = BATCH,
        on_record: Callable[[dict], None] | None = None,
    ):
        super().__init__(name="dicom-node-worker", daemon=True)
        if batch < 1:
            raise ValueError(f"batch must be >= 1. Received batch={batch}")
        self.spool, self.analyser, self.store, self.policy = spool, analyser, store, policy
        self.backoff = backoff or Backoff()
        self.settle, self.poll, self.batch = settle, poll, batch
        self.on_record = on_record
        self._wake, self._halt = threading.Event(), threading.Event()
        self._studies: dict[Path, str] = {}  # file -> its StudyInstanceUID, read once

    def wake(self) -> None:
        """Called on each received instance."""
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        while not self._halt.is_set():
            self._wake.clear()
            try:
                paths, wait = self.ready()
                if paths:
                    if self.answer(paths):
                        self.backoff.reset()
                        continue
                    wait = self.backoff.next()
                    self._halt.wait(wait)
                    continue
            except Exception as err:  # noqa: BLE001 (the worker must not die: a disk error)
                log.error("worker: %s", first_line(err))
                wait = self.backoff.next()
            self._wake.wait(min(wait, self.poll))

    def drain(self) -> bool:
        """Answers everything pending now, settled or not; False when a batch failed."""
        while paths := self.ready(settle=0.0)[0]:
            if not self.answer(paths):
                return False
        return True

    def ready(self, settle: float | None = None) -> tuple[list[Path], float]:
        """The next batch: whole settled studies, oldest first, up to `batch` images; and
        how long until the next unsettled study settles (when the batch is empty)."""
        settle = self.settle if settle is None else settle
        groups: dict[str, list[Path]] = {}
        newest: dict[str, float] = {}
        pending = self.spool.pending()
        self._studies = {p: self._studies[p] for p in pending if p in self._studies}
        for path in pending:
            study = self._study_of(path)
            groups.setdefault(study, []).append(path)
            newest[study] = max(newest.get(study, 0.0), _mtime(path))
        now, batch, wait = time.time(), [], self.poll
        for study, paths in groups.items():
            age = now - newest[study]
            if age < settle:
                wait = min(wait, settle - age)
                continue
            if batch and len(batch) + len(paths) > self.batch:
                break
            batch += paths
        return batch, max(wait, 0.01)

    def _study_of(self, path: Path) -> str:
        if path not in self._studies:
            try:
                header = pydicom.dcmread(
                    path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]
                )
                self._studies[path] = str(header.get("StudyInstanceUID", path.stem))
            except Exception:  # noqa: BLE001 (read_image says why, per file)
                self._studies[path] = path.stem
        return self._studies[path]

    def answer(self, paths: Sequence[Path]) -> bool:
        """Answers a batch; False when the model or the PACS failed (all retried later)."""
        start = time.perf_counter()
        readings = self._read(paths)
        if not readings:
            return True
        try:
            answers = self.analyser.answer(list(readings.values()))
            self.store([ds for answer in answers for ds in answer.datasets])
        except Exception as err:  # noqa: BLE001 (model server or PACS down: retried later)
            log.warning("will retry %d image(s): %s", len(readings), first_line(err))
            return False
        answered = time.time()
        # Said once stored, before the spool forgets the images: a crash in between
        # answers them again under the same UIDs (the PACS keeps one) and says so again,
        # rather than leaving an answer no line mentions.
        log_answers(answers, (time.perf_counter() - start) * 1000)
        for path, answer in zip(readings, answers, strict=True):
            self._settle(path, answer, answered)
        return True

    def _read(self, paths: Sequence[Path]) -> dict[Path, Image | NotAnalysed]:
        readings = {}
        for path in paths:
            try:
                readings[path] = read_image(path.read_bytes(), self.policy)
            except NotAnalysed as refused:
                readings[path] = refused
            except Skipped as why:
                (log.debug if why.quiet else log.warning)("skipped %s: %s", path.stem, why)
                if why.keep:
                    self.spool.set_aside(path, f"skipped: {why}")
                else:
                    self.spool.finish(path)
            except OSError as err:  # set aside, so that it is not read again and again
                log.error("cannot read %s from the spool: %s", path.name, first_line(err))
                self.spool.set_aside(path, f"not readable from the spool: {first_line(err)}")
        return readings

    def _settle(self, path: Path, answer: Answer, answered: float) -> None:
        """The one place an answered image leaves the spool and is recorded."""
        received = _mtime(path)
        if answer.error is not None:
            log.warning(
                "cannot answer %s (%s): %s; kept in %s",
                answer.header.get("SOPInstanceUID"),
                study_name(answer.header),
                answer.error,
                self.spool.root / "failed",
            )
            self.spool.set_aside(path, f"not answered: {answer.error}")
            return
        if answer.finding is None:
            self.spool.set_aside(path, f"not analysed: {answer.reason}")
        else:
            self.spool.finish(path)
        if self.on_record is not None:
            self.on_record(usage_record(answer, received=received, answered=answered))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
