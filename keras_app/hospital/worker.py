"""The DICOM node's spool worker: answers what the spool holds, in batches across studies.

A study is taken once it has settled (no new instance for `settle` seconds), so the
images of one study are answered together; the studies ready at one moment are
answered as one batch of up to `batch` images (one model call, one association to the
PACS), so a burst is not answered one study at a time.

The finding comes first, its explanation after: a batch's SRs are stored as soon as
they are built (a prediction each), and the Grad-CAM overlays, most of the work, are
drawn once no settled image waits for its SR (or an overlay has waited `PATIENCE`).
Storing runs in a second thread while the next batch is computed: it waits on the
PACS, computing on the CPU. A failure (the model server or the PACS down) leaves the
batch in the spool, retried with back-off; an image leaves the spool only once all its
answers are stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom

from keras_app.decision.header_policy import HeaderPolicy
from keras_app.hospital.answers import Analyser, Answer, log_answers, study_name, usage_fields
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

# Eight chest X-rays are one model call and one Grad-CAM pass of about a second on two
# cores: large enough to share the model's fixed cost across a burst, small enough that
# the first answers of a burst are stored while the rest are being worked on.
BATCH = 8
# Seconds an answered image waits for its overlay before overlays go before new SRs:
# under a steady stream of new images, explanations still follow.
PATIENCE = 10.0


@dataclass
class _Answered:
    """One image whose SR is stored, waiting for its overlay."""

    image: Image
    answer: Answer
    stored: float  # time.time() its SR was stored


@dataclass
class _Batch:
    """Work done and waiting to be stored: SRs (`explained` None) or overlays."""

    paths: list[Path]
    answers: list[Answer]
    datasets: list
    start: float  # perf_counter when its work began
    images: list  # the Image of each path (None: not analysed)
    explained: list[_Answered] | None = None


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
        on_record: called with `answers.usage_fields(...)` once per answered image (e.g.
            `lambda f: usage_log.record(**f)`).
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
        self._storing = ThreadPoolExecutor(1, thread_name_prefix="dicom-node-store")
        self._stored: Future | None = None  # the batch being stored, one at a time
        self._in_flight: set[Path] = set()
        self._lock = threading.Lock()
        self._explain: dict[Path, _Answered] = {}  # SR stored, overlay to come

    def wake(self) -> None:
        """Called on each received instance."""
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self._wake.clear()
                wait = self._step()
                if wait:
                    self._wake.wait(wait)
        finally:
            self._storing.shutdown(wait=True)  # a batch being stored is stored

    def _step(self) -> float:
        """Computes the next batch and hands it to the storing thread; the seconds to wait
        before the next step (0: at once)."""
        try:
            batch, wait = self._next_batch()
            if batch is None:
                if self._stored is not None and not self._stored.done():
                    self._stored.result()  # nothing else to do: wait for the store
                    return 0.0
                return min(wait, self.poll)
            if not self._previous_stored() or not batch:
                self._halt.wait(self.backoff.next())  # arrivals do not cut a back-off short
                return 0.0
            if batch.paths:
                self._in_flight.update(batch.paths)
                self._stored = self._storing.submit(self._store, batch)
            self.backoff.reset()
            return 0.0
        except Exception as err:  # noqa: BLE001 (the worker must not die: a disk error)
            log.error("worker: %s", first_line(err))
            self._halt.wait(self.backoff.next())
            return 0.0

    def _next_batch(self) -> tuple[_Batch | bool | None, float]:
        """(the next batch, 0), (False: the model failed, 0) or (None, seconds to wait)."""
        with self._lock:
            waiting = [p for p in self._explain if p not in self._in_flight]
            oldest = min((self._explain[p].stored for p in waiting), default=time.time())
        paths, wait = self.ready()
        if waiting and (not paths or time.time() - oldest > PATIENCE):
            return self._explained(waiting[: self.batch]), 0.0
        if paths:
            return self._compute(paths) or False, 0.0
        return None, wait

    def _previous_stored(self) -> bool:
        """Waits for the batch being stored; False when storing it failed."""
        if self._stored is None:
            return True
        ok, self._stored = self._stored.result(), None
        return ok

    def drain(self) -> bool:
        """Answers everything pending now, settled or not, overlays included, in this
        thread; False when a batch failed."""
        while paths := self.ready(settle=0.0)[0]:
            if not self.answer(paths):
                return False
        return True

    def answer(self, paths: Sequence[Path]) -> bool:
        """Answers a batch and stores it, overlays included, in this thread; False when the
        model or the PACS failed (all retried later)."""
        batch = self._compute(paths)
        if batch is None or (batch.paths and not self._store(batch)):
            return False
        with self._lock:
            waiting = [p for p in batch.paths if p in self._explain]
        return not waiting or self._store(self._explained(waiting))

    def ready(self, settle: float | None = None) -> tuple[list[Path], float]:
        """The next batch: whole settled studies, oldest first, up to `batch` images; and
        how long until the next unsettled study settles (when the batch is empty)."""
        settle = self.settle if settle is None else settle
        groups: dict[str, list[Path]] = {}
        newest: dict[str, float] = {}
        with self._lock:
            taken = self._in_flight | set(self._explain)
        pending = [p for p in self.spool.pending() if p not in taken]
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

    def _compute(self, paths: Sequence[Path]) -> _Batch | None:
        """Reads a batch and builds its SRs; None when the model failed (retried later)."""
        start = time.perf_counter()
        readings = self._read(paths)
        if not readings:
            return _Batch([], [], [], start, [])
        try:
            answers = self.analyser.answer(list(readings.values()))
        except Exception as err:  # noqa: BLE001 (a model server down: retried later)
            log.warning("will retry %d image(s): %s", len(readings), first_line(err))
            return None
        images = [r if isinstance(r, Image) else None for r in readings.values()]
        datasets = [ds for answer in answers for ds in answer.datasets]
        return _Batch(list(readings), answers, datasets, start, images)

    def _explained(self, paths: Sequence[Path]) -> _Batch:
        """The overlays of images whose SRs are stored."""
        start = time.perf_counter()
        with self._lock:
            waiting = [self._explain[p] for p in paths]
        drawn = self.analyser.draw_overlays([(w.image, w.answer) for w in waiting])
        datasets = [ds for ds in drawn if ds is not None]
        answers = [w.answer for w in waiting]
        return _Batch(list(paths), answers, datasets, start, [], explained=waiting)

    def _store(self, batch: _Batch) -> bool:
        """Stores a batch's datasets; then they are said, and the images whose answers are
        all stored leave the spool."""
        try:
            self.store(batch.datasets)
        except Exception as err:  # noqa: BLE001 (the PACS down: retried later)
            log.warning("will retry %d image(s): %s", len(batch.paths), first_line(err))
            with self._lock:
                self._in_flight.difference_update(batch.paths)
            return False
        stored = time.time()
        try:
            if batch.explained is not None:
                for path, waited in zip(batch.paths, batch.explained, strict=True):
                    with self._lock:
                        self._explain.pop(path, None)
                    self._settle(path, waited.answer, waited.stored)
                return True
            # Said once stored, before the spool forgets the images: a crash in between
            # answers them again under the same UIDs (the PACS keeps one) and says so
            # again, rather than leaving an answer no line mentions.
            log_answers(batch.answers, (time.perf_counter() - batch.start) * 1000)
            for path, answer, image in zip(batch.paths, batch.answers, batch.images, strict=True):
                if image is not None and self.analyser.wants_overlay(answer):
                    with self._lock:
                        self._explain[path] = _Answered(image, answer, stored)
                else:
                    self._settle(path, answer, stored)
        finally:
            with self._lock:
                self._in_flight.difference_update(batch.paths)
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
            except FileNotFoundError:
                continue  # answered by the storing thread since it was listed
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
            self.on_record(usage_fields(answer, received=received, answered=answered))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
