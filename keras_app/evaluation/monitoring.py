"""Watching a deployed model: its usage log judged against the reference its operating point was
fitted on (python -m keras_app.monitor).

The reference is the current operating point version's own: the calibrated scores of the
images it was chosen on (training's validation split for version 1, a site's local images
for a refit), read from `RUN/operating_points/`. Version 1's is computed once from the
run's validation split, carved as training carved it, and kept there.

Lines of the log answered at another operating point version (or, with `model`, by
another model) are counted and left out: a point is judged against its own reference.
The checks (`keras_app.decision.drift`) judge the last `days` days up to the newest line;
the charts and TensorBoard scalars show every day.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from keras_app.artifacts import runs
from keras_app.artifacts.op_history import OperatingPointHistory
from keras_app.core.errors import UsageError
from keras_app.decision import drift
from keras_app.decision.operating_point import REFER, OperatingPoint, called_positive
from keras_app.inference.usage_log import read_usage_log


@dataclass(frozen=True)
class Reference:
    """What a deployed operating point is compared with."""

    run: str
    version: int
    operating_point: OperatingPoint
    scores: np.ndarray
    prevalence: float | None
    positive_rate: float
    split: str

    @property
    def n(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Monitored:
    """The monitor's findings.

    Attributes:
        reference: what the log was judged against.
        window: (first, last) day of the judged window, ISO dates.
        checks: `drift.Check`s of the window.
        days: one row per day of the log (this version's lines): counts, rates, PSI,
            KS, latency percentiles.
        window_scores: the analysed images' scores in the window (for the histogram).
        left_out: lines left out, by why ("operating point v1", "model other").
        totals: lines read, lines judged.
    """

    reference: Reference
    window: tuple[str, str]
    checks: list[drift.Check]
    days: list[dict]
    window_scores: np.ndarray
    left_out: dict = field(default_factory=dict)
    totals: dict = field(default_factory=dict)

    @property
    def alerts(self) -> list[drift.Check]:
        return [c for c in self.checks if c.alert]


# --- the reference -------------------------------------------------------------------------------


def load_reference(run: str | Path, data: str | None = None, batch_size: int = 32) -> Reference:
    """The current operating point's reference scores; version 1's computed once if needed.

    Args:
        run: a run or ensemble folder.
        data: where the run's data is, when its config.json's path does not reach it.
    """
    folder = runs.load_run(run)
    history = OperatingPointHistory(folder.path)
    version = history.current_version()
    op = OperatingPoint.from_dict(folder.operating_point())
    if op.positive_index(folder.class_names) is None:
        raise UsageError(f"{folder.path}: the monitor needs a two-class operating point")
    record = history.reference(version)
    if record is None:
        if version != 1:
            raise UsageError(
                f"{history.reference_path(version)} is missing: version {version} has no "
                "reference scores (refit it with python -m keras_app.calibrate)"
            )
        record = validation_reference(folder, op, data, batch_size)
        history.write_reference(1, record)
    return Reference(
        run=str(folder.path),
        version=version,
        operating_point=op,
        scores=np.asarray(record["scores"], float),
        prevalence=record.get("prevalence"),
        positive_rate=float(record["positive_rate"]),
        split=record.get("split", "val"),
    )


def validation_reference(run: runs.Run, op: OperatingPoint, data: str | None, batch_size) -> dict:
    """Version 1's reference: the run's calibrated scores on its validation split."""
    import data_pipelines
    from keras_app.inference.predictor import open_run
    from keras_app.recipe.config import manifest_options

    spec = data or run.config.get("data")
    try:
        loaded = data_pipelines.load_dataset(
            spec,
            val_fraction=run.config.get("val_fraction", 0.1),
            seed=run.config.get("seed", 42),
            manifest=manifest_options(run.config),
            report=lambda line: None,
        )
    except data_pipelines.DataError as err:
        raise UsageError(
            f"cannot read {run.path}'s data to compute its validation reference ({err}); "
            "name it with --reference-data"
        ) from None
    val = loaded.splits["val"]
    predictor = open_run(run.path)
    probs = predictor.predict_split(val, batch_size)
    pos = op.positive_index(run.class_names)
    return {
        "split": "val",
        "data_fingerprint": loaded.fingerprint,
        "scores": [round(float(s), 6) for s in probs[:, pos]],
        "prevalence": float(np.mean(val.labels == pos)),
        "positive_rate": float(np.mean(op.decide(probs, run.class_names) == pos)),
        "n": int(len(val.labels)),
    }


# --- the log -------------------------------------------------------------------------------------


def monitor(log: str | Path, reference: Reference, *, days: int = 7, model=None) -> Monitored:
    """Judges the usage log's lines of the reference's operating point version.

    Raises:
        UsageError: the log holds no line of that version (and model).
    """
    if days < 1:
        raise UsageError(f"--days must be >= 1. Received --days={days}")
    lines, left_out, read = [], defaultdict(int), 0
    for record in read_usage_log(log):
        read += 1
        if model is not None and record.get("model") != model:
            left_out[f"model {record.get('model')}"] += 1
        elif record.get("operating_point_version") != reference.version:
            left_out[f"operating point v{record.get('operating_point_version')}"] += 1
        else:
            lines.append({**record, "when": _time(record["time"], log)})
    if not lines:
        raise UsageError(
            f"{log} holds no line answered at operating point version {reference.version}"
            + (f" by model {model}" if model else "")
            + f" ({read} lines read: {dict(left_out) or 'none'})"
        )
    newest = max(line["when"] for line in lines)
    start = newest - timedelta(days=days)
    window = [line for line in lines if line["when"] > start]
    checks = drift.checks(
        reference.scores,
        reference.positive_rate,
        *_analysed(window, reference),
        not_analysed=sum(line["status"] != "analysed" for line in window),
        latencies_ms=[line["latency_ms"] for line in window if line.get("latency_ms") is not None],
    )
    return Monitored(
        reference=reference,
        window=(start.date().isoformat(), newest.date().isoformat()),
        checks=checks,
        days=per_day(lines, reference),
        window_scores=_analysed(window, reference)[0],
        left_out=dict(left_out),
        totals={"read": read, "judged": len(lines), "window": len(window)},
    )


def _analysed(lines, reference: Reference) -> tuple[np.ndarray, np.ndarray]:
    """Scores and positive calls of the analysed lines (a referred image called as the
    threshold calls it, as the reference's positive rate counts every image)."""
    analysed = [x for x in lines if x["status"] == "analysed" and x.get("probability") is not None]
    scores = np.asarray([x["probability"] for x in analysed], float)
    op = reference.operating_point
    referred = np.asarray([x.get("decision") == REFER for x in analysed], bool)
    called = np.asarray([x.get("decision") == op.positive_class for x in analysed], bool)
    if referred.any() and op.threshold is not None:
        at = called_positive(scores[referred].astype(np.float32), op.threshold)
        called[referred] = at
    return scores, called


def refer_rate(lines) -> float | None:
    """The share of the analysed lines referred to a reader (the refer band); None for none."""
    analysed = [x for x in lines if x["status"] == "analysed"]
    if not analysed:
        return None
    return sum(x.get("decision") == REFER for x in analysed) / len(analysed)


def per_day(lines, reference: Reference) -> list[dict]:
    """One row per calendar day (UTC) of the lines."""
    by_day = defaultdict(list)
    for line in lines:
        by_day[line["when"].date().isoformat()].append(line)
    rows = []
    for day in sorted(by_day):
        group = by_day[day]
        scores, called = _analysed(group, reference)
        latencies = [x["latency_ms"] for x in group if x.get("latency_ms") is not None]
        row = {
            "day": day,
            "studies": len({x.get("study") or x.get("instance") for x in group}),
            "images": len(group),
            "analysed": len(scores),
            "not_analysed_rate": 1 - len(scores) / len(group),
            "refer_rate": refer_rate(group),
            "positive_rate": float(called.mean()) if len(called) else None,
            "psi": None,
            "ks_statistic": None,
            "latency_p50": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_p95": float(np.percentile(latencies, 95)) if latencies else None,
        }
        if len(scores) >= drift.MIN_IMAGES:
            row["psi"] = drift.psi(reference.scores, scores)
            row["ks_statistic"] = drift.ks(reference.scores, scores)[0]
        rows.append(row)
    return rows


def _time(text: str, log) -> datetime:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{log}: a line's time is not an ISO time: {text!r}") from None


# --- TensorBoard ---------------------------------------------------------------------------------

SCALARS = (
    ("studies", "usage/studies_per_day"),
    ("images", "usage/images_per_day"),
    ("positive_rate", "decisions/positive_rate"),
    ("not_analysed_rate", "usage/not_analysed_rate"),
    ("refer_rate", "usage/refer_rate"),
    ("psi", "drift/score_psi"),
    ("ks_statistic", "drift/score_ks_statistic"),
    ("latency_p50", "latency/p50_ms"),
    ("latency_p95", "latency/p95_ms"),
)


def write_scalars(found: Monitored, folder: Path) -> Path:
    """Per-day scalars as TensorBoard event files, one step per day since 1970-01-01, with
    the reference's positive rate beside the observed one."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for row in found.days:
            step = (datetime.fromisoformat(row["day"]).date() - datetime(1970, 1, 1).date()).days
            for key, tag in SCALARS:
                if row[key] is not None:
                    tf.summary.scalar(tag, row[key], step=step)
            tf.summary.scalar(
                "decisions/reference_positive_rate", found.reference.positive_rate, step=step
            )
    writer.flush()
    writer.close()
    return folder
