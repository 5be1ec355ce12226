"""The answers the DICOM node stores: for each image its result, or why it was not analysed.

`Analyser.answer` predicts a batch of images at once (images of many studies, one
model call) and builds each image's Comprehensive SR; `Analyser.draw_overlays` then draws
the Grad-CAM overlays of a batch (one Grad-CAM pass), for a Keras model. The finding
comes first, its explanation after: the SR is cheap, the overlay is most of the work.
An image the header policy or the model's image guard refuses, or whose result cannot
be built, is answered by a "not analysed" SR with the reason (hospital.results).
`usage_fields` is the one place that says what is recorded per answered image, without
patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pydicom

from keras_app.hospital.reading import Image, NotAnalysed, safe_reason
from keras_app.hospital.results import (
    Finding,
    ResultUids,
    build_not_analysed_sr,
    build_overlay,
    build_sr,
)
from keras_app.inference.usage_log import model_version

log = logging.getLogger("keras_app.dicom_node")

Outcome = tuple[Finding, str | None, float | None]  # finding, why not shown, guard score


@dataclass(frozen=True)
class Answer:
    """One image's answer.

    Attributes:
        header: the image's header.
        datasets: what to store in the PACS; empty when no answer could be built.
        finding: the model's finding; None when the image was not analysed.
        reason: why it was not analysed (None when it was).
        ood_score: the image guard's score, where the model has a guard.
        error: why no answer at all could be built (then `datasets` is empty).
        model: the model's name and version, as the SR names them.
    """

    header: pydicom.Dataset
    datasets: list
    model: tuple[str, str] = ("", "")
    finding: Finding | None = None
    reason: str | None = None
    ood_score: float | None = None
    error: str | None = None


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

    @property
    def model(self) -> tuple[str, str]:
        return (self.predictor.name, self.version)

    @property
    def model_key(self) -> str:
        return f"{self.predictor.name}:{self.version}"

    def answer(self, readings: Sequence[Image | NotAnalysed]) -> list[Answer]:
        """Each reading's SR, in order: images predicted as one batch, refusals said.

        Raises:
            Exception: from the predictor (a server down): nothing is answered then.
        """
        images = [r for r in readings if isinstance(r, Image)]
        outcomes = iter(self.outcomes(images) if images else [])
        answers = []
        for reading in readings:
            if isinstance(reading, NotAnalysed):
                answers.append(self.not_analysed(reading.header, reading.reason))
                continue
            finding, refusal, score = next(outcomes)
            if refusal is not None:
                answers.append(self.not_analysed(reading.header, refusal, ood_score=score))
            else:
                answers.append(self._result(reading, finding, score))
        return answers

    def findings(self, images: Sequence[Image]) -> list[Finding]:
        """The model's finding for each image, whatever its image guard says (`answer`
        honours the guard)."""
        return [finding for finding, _, _ in self.outcomes(images)]

    def results(self, image: Image, finding: Finding) -> list[pydicom.Dataset]:
        """The SR and, with overlays, the Grad-CAM overlay answering one image."""
        uids = ResultUids.for_source(image.header, finding.model_key)
        answer = [build_sr(image.header, finding, uids)]
        if self.overlays:
            [heatmap] = self._heatmaps([image])
            answer.append(build_overlay(image.header, self._overlay(image, finding, heatmap), uids))
        return answer

    def wants_overlay(self, answer: Answer) -> bool:
        """Whether an answered image gets a Grad-CAM overlay too."""
        return self.overlays and answer.finding is not None and bool(answer.datasets)

    def draw_overlays(self, items: Sequence[tuple[Image, Answer]]) -> list[pydicom.Dataset | None]:
        """The Grad-CAM overlay of each (image, its answer), one Grad-CAM pass for all;
        None where one cannot be drawn (its SR stands alone)."""
        if not items:
            return []
        heatmaps = self._heatmaps([image for image, _ in items])
        out = []
        for (image, answer), heatmap in zip(items, heatmaps, strict=True):
            uids = ResultUids.for_source(image.header, answer.finding.model_key)
            try:
                drawn = self._overlay(image, answer.finding, heatmap)
                out.append(build_overlay(image.header, drawn, uids))
            except Exception as err:  # noqa: BLE001 (reported per image; the SR is stored)
                log.warning(
                    "no overlay for %s: %s",
                    image.header.get("SOPInstanceUID"),
                    safe_reason(err, image.header),
                )
                out.append(None)
        return out

    def outcomes(self, images: Sequence[Image]) -> list[Outcome]:
        """(the model's finding, why the image guard refuses it or None, the guard's score)
        per image."""
        from keras_app.decision.metrics import positive_index

        # Every predictor answers with its decisions and the operating point that made them
        # (a served model in its outputs): the SR records the same whatever serves it.
        scores = self.predictor.predict_bytes([i.png for i in images])
        labels = list(scores.labels or self.predictor.class_names)
        pos = positive_index(labels, scores.positive_class)
        ood = scores.ood_score  # None: the model carries no image guard
        out = []
        rows = zip(scores.probabilities, scores.decisions, strict=True)
        for i, (probs, decision) in enumerate(rows):
            score = None if ood is None else float(np.asarray(ood).reshape(-1)[i])
            finding = Finding(
                present=decision == labels[pos],
                probability=float(probs[pos]),
                threshold=scores.threshold,
                model_name=self.predictor.name,
                model_version=self.version,
                operating_point_version=scores.operating_point_version,
                refer=scores.referred(i),  # inside the refer band: a reader decides
            )
            # The guard's refusal, in the words every path uses (`Scores.not_analysed`).
            out.append((finding, scores.not_analysed(i), score))
        return out

    def not_analysed(
        self, header: pydicom.Dataset, reason: str, *, ood_score: float | None = None
    ) -> Answer:
        """The "not analysed" SR for one image, or an `Answer` with the error."""
        uids = ResultUids.for_source(header, self.model_key)
        try:
            sr = build_not_analysed_sr(header, reason, self.predictor.name, self.version, uids)
        except Exception as err:  # noqa: BLE001 (a header no SR can be built from)
            error = safe_reason(err, header, "no SR can be built from its header")
            return Answer(header, [], self.model, reason=reason, ood_score=ood_score, error=error)
        return Answer(header, [sr], self.model, reason=reason, ood_score=ood_score)

    def _result(self, image: Image, finding: Finding, score) -> Answer:
        uids = ResultUids.for_source(image.header, finding.model_key)
        try:
            sr = build_sr(image.header, finding, uids)
        except Exception as err:  # noqa: BLE001 (said in a "not analysed" SR instead)
            reason = safe_reason(err, image.header, "the result could not be built")
            return self.not_analysed(image.header, reason, ood_score=score)
        return Answer(image.header, [sr], self.model, finding=finding, ood_score=score)

    def _heatmaps(self, images: Sequence[Image]) -> list[np.ndarray]:
        """Grad-CAM of the pneumonia evidence for every image in one pass."""
        from keras_app.decision.metrics import positive_index
        from keras_app.evaluation.gradcam import explain

        names = self.predictor.class_names
        # Always the positive class: where the evidence for pneumonia lies (its margin over
        # NORMAL, so the map has signal whichever way the finding went).
        pos = positive_index(names, self.predictor.operating_point.positive_class)
        pixels = self.predictor.decode([i.png for i in images])
        found = explain(self.predictor.keras_model, pixels, pos)
        return list(found.heatmaps)

    def _overlay(self, image: Image, finding: Finding, heatmap: np.ndarray) -> np.ndarray:
        """The Grad-CAM of the pneumonia evidence, drawn readable: the finding, P(pneumonia),
        a colour bar, the image at least 512 px; a map with no evidence says so."""
        from keras_app.decision.metrics import positive_index
        from keras_app.evaluation.gradcam import render_overlay

        names = self.predictor.class_names
        pos = positive_index(names, self.predictor.operating_point.positive_class)
        title = (
            f"{names[pos]} {finding.verdict}  "
            f"P({names[pos]})={finding.probability:.3f}\n"
            f"map: evidence for {names[pos]}; not for diagnostic use"
        )
        return render_overlay(np.repeat(image.grey, 3, axis=-1), heatmap, title)


# --- what is said about an answer ----------------------------------------------------------------


def study_name(header: pydicom.Dataset) -> str:
    """How log lines name a study: its accession number, else its UID (never the patient)."""
    return str(header.get("AccessionNumber") or "") or str(header.get("StudyInstanceUID"))


def log_answers(answers: Sequence[Answer], ms: float) -> None:
    """One line per study with a finding (present if any image is, else refer if any image
    is referred, the highest probability), and one per image not analysed, with its reason."""
    studies: dict[str, list[Finding]] = {}
    for answer in answers:
        name = study_name(answer.header)
        if answer.finding is not None:
            studies.setdefault(name, []).append(answer.finding)
        elif answer.datasets:
            log.info(
                "%s  not analysed: %s  (%s)",
                name,
                answer.reason,
                answer.header.get("SOPInstanceUID"),
            )
    for name, findings in studies.items():
        verdicts = {f.verdict for f in findings}
        verdict = next(v for v in ("present", "refer", "absent") if v in verdicts)
        images = f" ({len(findings)} images)" if len(findings) > 1 else ""
        log.info(
            "%s  pneumonia %s  p=%.3f  %.0f ms%s",
            name,
            verdict,
            max(f.probability for f in findings),
            ms,
            images,
        )


def usage_fields(answer: Answer, *, received: float, answered: float) -> dict:
    """What the usage log records of one answered image (`UsageLog.record`'s arguments): no
    patient data; the log writes the UIDs as keyed hashes."""
    finding = answer.finding
    return {
        "instance_uid": str(answer.header.get("SOPInstanceUID", "")),
        "study_uid": str(answer.header.get("StudyInstanceUID", "")) or None,
        "model": answer.model[0],
        "model_version": answer.model[1],
        "operating_point_version": finding.operating_point_version if finding else None,
        "probability": finding.probability if finding else None,
        "decision": finding.verdict if finding else None,
        "guard": None if answer.ood_score is None else finding is not None and not answer.reason,
        "refused": answer.reason is not None and answer.ood_score is None,
        "failed": bool(answer.error),
        "latency_ms": (answered - received) * 1000,
        "time": datetime.fromtimestamp(answered, timezone.utc),
    }
