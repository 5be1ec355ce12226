"""The operating point: what turns a model's probabilities into a screening decision.

Both parts are fitted on the validation split after training, never on the
split that is judged:
- temperature scaling (Guo et al., "On Calibration of Modern Neural Networks",
  ICML 2017): one scalar T divides the log-probabilities; it changes how
  confident the model is, never how it ranks images (AUC is unchanged);
- the decision threshold on the positive class's calibrated probability: the
  one whose validation sensitivity reaches the target with the best specificity;
- optionally (`--refer-band SHARE`) a refer band around the threshold: the share of
  validation cases nearest it, in log-odds, is referred to a reader instead of decided.

NumPy and scikit-learn only: predictors and reports use it without Keras.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

# Temperatures searched. Above 20 a model is broken, not miscalibrated. Below 0.25 the fit
# measures how separable a small validation split is (its NLL falls towards T = 0 when no
# image is misranked), not calibration; it would also push probabilities to float32's 1.0.
T_RANGE = (0.25, 20.0)
# The two answers that are not a class, in the words every path writes them (predict's
# table, predictions.csv, the usage log).
NOT_ANALYSED = "not analysed"  # a valid image the model must not answer (the image guard)
REFER = "refer"  # an analysed image inside the refer band: a reader decides, not the model
# The widest refer band: one holding more than half the cases would refer more than it decides.
MAX_REFER_SHARE = 0.5
# Probabilities are clipped this far from 0 and 1 before their log-odds are taken (float32's
# 1.0 would be an infinite distance from the threshold).
LOGIT_EPS = 1e-7


def scale(probs, temperature: float) -> np.ndarray:
    """`TemperatureScaling` in NumPy (float64), for fitting and for reports."""
    logits = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(y_true, probs) -> float:
    """The temperature minimising the negative log-likelihood of `y_true` under `probs`."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, int)
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one labelled row. Received none")

    def nll(log_t):
        p = scale(probs, float(np.exp(log_t)))
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)))

    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    found = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def choose_threshold(y_true, scores, target_sensitivity: float) -> float:
    """A threshold on `scores` whose sensitivity on `y_true` (0/1) reaches the target, with
    the highest specificity: halfway between the boundary case's score and the next lower.

    A case is called positive when its score is >= the threshold (`called_positive`). The
    threshold is a float32 value strictly above the next lower score and at most the
    boundary score, both in float32, so that every predictor (NumPy or a served graph,
    comparing float32) makes on this split exactly the decisions the choice counted.

    Raises:
        ValueError: the target is outside (0, 1], or `y_true` holds one class only.
    """
    from sklearn.metrics import roc_curve

    if not 0 < target_sensitivity <= 1:
        raise ValueError(
            "target_sensitivity must be in (0, 1]. "
            f"Received target_sensitivity={target_sensitivity}"
        )
    y = np.asarray(y_true, int)
    if y.min() == y.max():
        raise ValueError("choosing a threshold needs both classes. Received one class only")
    scores = np.asarray(scores, np.float32)
    _, tpr, thresholds = roc_curve(y, scores, drop_intermediate=False)
    i = int(np.argmax(tpr >= target_sensitivity - 1e-12))
    boundary = np.float32(min(thresholds[i], 1.0))
    below = np.float32(thresholds[i + 1] if i + 1 < len(thresholds) else 0.0)
    # Halfway to the next lower score: the same decisions on this split, and a margin
    # against small numeric differences between predictors.
    middle = np.float32((np.float64(boundary) + np.float64(below)) / 2)
    if middle <= below:  # adjacent float32 values: the smallest value above `below`
        middle = np.nextafter(below, np.float32(np.inf))
    return float(min(middle, boundary))


def called_positive(p_positive, threshold):
    """THE decision rule: a case is positive when its calibrated P(positive) >= the threshold,
    both in float32.

    One rule for every predictor: NumPy arrays here, TensorFlow tensors in the exported
    graph (`keras_app.inference.export` calls this same function on a float32 tensor), so
    a served model and a run folder decide every image alike, the boundary case included.
    """
    return p_positive >= np.float32(threshold)


def passes_guard(score, limit):
    """THE guard rule: an image is analysed when its guard score, in float32, is at most the
    limit. Like `called_positive`, called on NumPy arrays and on the exported graph's tensors."""
    return score <= np.float32(limit)


def in_refer_band(p_positive, low, high):
    """THE refer rule: an analysed case is referred to a reader, not decided, when
    low <= its calibrated P(positive) < high, all in float32.

    Like `called_positive`, called on NumPy arrays and on the exported graph's tensors, so a
    served model refers exactly the cases a run folder refers. Whether the case is analysed
    (`passes_guard`) is checked by the caller: an image the guard stops is not referred, it
    is not analysed.
    """
    return (p_positive >= np.float32(low)) & (p_positive < np.float32(high))


def refer_reason(p_positive: float, low: float, high: float, positive_class: str | None) -> str:
    """Why an analysed image is referred, in one line (every path says this)."""
    name = positive_class or "positive"
    return (
        f"P({name}) {p_positive:.4g} within the refer band [{low:.4g}, {high:.4g}): "
        "a reader decides"
    )


def check_refer_share(share: float) -> float:
    """The share, or a ValueError saying what was received."""
    if not 0 < share <= MAX_REFER_SHARE:
        raise ValueError(
            f"the refer band's share must be in (0, {MAX_REFER_SHARE}]. Received {share}"
        )
    return float(share)


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def fit_refer_band(is_positive, p_positive, threshold: float, share: float) -> dict:
    """The refer band around `threshold` holding `share` of the cases nearest it in log-odds.

    The rule: with d = |logit(p) - logit(threshold)| per case (p clipped to [1e-7, 1 - 1e-7],
    float64) sorted ascending and k = max(1, round(share * n)), the half-width w is halfway
    between the k-th and the (k+1)-th smallest d; low = sigmoid(logit(threshold) - w) and
    high = sigmoid(logit(threshold) + w), each rounded to float32. The band is symmetric in
    evidence (log-odds), not in probability; its k nearest cases fall inside it (ties at the
    k-th distance aside), and `validation` counts what `in_refer_band` itself refers.

    Args:
        is_positive: bool per case (the split's labels == the positive class).
        p_positive: the calibrated model's P(positive) per case.
        threshold: the operating point's threshold.
        share: the share of cases to refer, in (0, 0.5].

    Returns:
        {"low", "high", "share", "half_width_logit", "validation": {"n", "referred",
        "sensitivity", "specificity"}}: the referred share and the decided cases'
        sensitivity and specificity, each with its 95% Wilson interval.
    """
    from keras_app.decision.metrics import rate_with_ci

    share = check_refer_share(share)
    y = np.asarray(is_positive, bool)
    p = np.asarray(p_positive, np.float32)
    if len(p) == 0:
        raise ValueError("fitting a refer band needs at least one case. Received none")
    centre = float(_logit(threshold))
    distance = np.sort(np.abs(_logit(p) - centre))
    k = max(1, int(round(share * len(p))))
    beyond = distance[k] if k < len(p) else distance[-1] + 1.0
    width = float((distance[k - 1] + beyond) / 2)
    low = float(np.float32(1 / (1 + np.exp(-(centre - width)))))
    high = float(np.float32(1 / (1 + np.exp(-(centre + width)))))
    referred = in_refer_band(p, low, high)
    called = called_positive(p, threshold)
    decided = ~referred
    return {
        "low": low,
        "high": high,
        "share": share,
        "half_width_logit": width,
        "validation": {
            "n": int(len(p)),
            "referred": rate_with_ci(referred),
            "sensitivity": rate_with_ci(called[decided & y]),
            "specificity": rate_with_ci(~called[decided & ~y]),
        },
    }


def not_analysed_reason(ood_score: float, limit: float | None) -> str:
    """Why an image the guard stopped is not analysed, in one line (every path says this)."""
    above = f" above its limit {limit:.3g}" if limit is not None else ""
    return (
        "out of distribution: unlike the images the model was trained on "
        f"(guard score {ood_score:.3g}{above})"
    )


@dataclass(frozen=True)
class OperatingPoint:
    """How a model's probabilities become a decision, fitted on validation.

    Written to the run folder as operating_point.json and into an export's
    assets; every predictor decides with `decide`.

    Attributes:
        temperature: the calibration inside the saved model (1.0: none).
        positive_class: the class a screening test must not miss (two classes), else None.
        threshold: a case is positive when its calibrated P(positive) >= this
            (`called_positive`); None decides by the most probable class.
        target_sensitivity: the validation sensitivity the threshold was chosen to reach.
        chosen_on: the split the temperature and threshold were fitted on.
        validation: what they gave there: n, sensitivity, specificity (with 95%
            Wilson intervals), ECE before and after calibration.
        version: 1 for the point training chose; each later refit is the next number.
        provenance: where a version came from (command, date, data fingerprint, counts).
        guard: the image guard's limit and record ({} for a model without a guard):
            "limit" (an image whose score is above it is not analysed), "pass_rate" (the
            share of validation images the limit was chosen to let through), "chosen_on",
            "validation" (n and the pass rate with its Wilson interval), "method",
            "layers", "citation".
        refer_band: the refer band ({} without one, the default): "low", "high" (an
            analysed case with low <= P(positive) < high is referred to a reader,
            `in_refer_band`), "share" (of the validation cases it was chosen to hold),
            "half_width_logit", "validation" (n, the referred share, and the decided
            cases' sensitivity and specificity, with Wilson intervals); `fit_refer_band`.
    """

    temperature: float = 1.0
    positive_class: str | None = None
    threshold: float | None = None
    target_sensitivity: float | None = None
    chosen_on: str = "val"
    validation: dict = field(default_factory=dict)
    version: int = 1
    provenance: dict = field(default_factory=dict)
    guard: dict = field(default_factory=dict)
    refer_band: dict = field(default_factory=dict)

    @property
    def guard_limit(self) -> float | None:
        return self.guard.get("limit")

    @property
    def refer_limits(self) -> tuple[float, float] | None:
        """(low, high) of the refer band; None without one (or without a threshold)."""
        if not self.refer_band or self.threshold is None:
            return None
        return float(self.refer_band["low"]), float(self.refer_band["high"])

    def referred(self, probs, class_names, ood_scores=None) -> np.ndarray:
        """bool per row: referred to a reader, i.e. analysed (`analysed`, where guard scores
        are given) and inside the refer band (`in_refer_band`); all False without a band."""
        probs = np.asarray(probs, np.float32)
        pos = self.positive_index(class_names)
        if pos is None or self.refer_limits is None:
            return np.zeros(len(probs), bool)
        inside = in_refer_band(probs[:, pos], *self.refer_limits)
        return inside if ood_scores is None else inside & self.analysed(ood_scores)

    def analysed(self, ood_scores) -> np.ndarray:
        """bool per row: the image guard lets it through (every row, without a guard)."""
        scores = np.asarray(ood_scores, np.float32)
        if self.guard_limit is None:
            return np.ones(scores.shape, bool)
        return passes_guard(scores, self.guard_limit)

    def positive_index(self, class_names) -> int | None:
        """The column the threshold applies to; None where the rule is the most probable class."""
        names = [str(c) for c in class_names]
        if self.threshold is None or self.positive_class not in names or len(names) != 2:
            return None
        return names.index(self.positive_class)

    def decide(self, probs, class_names) -> np.ndarray:
        """The class index of each row: at the threshold (two classes), else the most probable."""
        probs = np.asarray(probs, np.float32)
        pos = self.positive_index(class_names)
        if pos is None:
            return probs.argmax(axis=1)
        return np.where(called_positive(probs[:, pos], self.threshold), pos, 1 - pos)

    def describe(self) -> str:
        """One line: the decision rule, its version, what it gave where it was chosen, and
        the calibration."""
        calibration = f"; calibration: temperature {self.temperature:.3f}"
        if self.threshold is None or self.positive_class is None:
            return "decision: the most probable class (no threshold stored)" + calibration
        line = (
            f"decision: {self.positive_class} when P({self.positive_class}) >= "
            f"{self.threshold:.4f} (operating point v{self.version})"
        )
        sens, spec = self.validation.get("sensitivity"), self.validation.get("specificity")
        if sens and spec and sens.get("value") is not None and spec.get("value") is not None:
            line += (
                f", chosen on {self.chosen_on} for sensitivity >= {self.target_sensitivity:g}"
                f" (there: sensitivity {sens['value']:.4f}, specificity {spec['value']:.4f})"
            )
        if self.refer_limits is not None:
            low, high = self.refer_limits
            line += (
                f"; refer band [{low:.4f}, {high:.4f}): a reader decides "
                f"(share {self.refer_band.get('share')} of {self.chosen_on})"
            )
        return line + calibration

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict | None) -> OperatingPoint:
        """From operating_point.json; the plain argmax decision for None (older runs)."""
        if not record:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


def fit_operating_point(
    y_true,
    raw_probs,
    class_names,
    target_sensitivity: float | None,
    *,
    split: str = "val",
    temperature: float | None = None,
    calibrated=None,
    refer_share: float | None = None,
) -> OperatingPoint:
    """Fits the temperature, then the threshold for `target_sensitivity`, then the refer band
    for `refer_share` around it, on one split.

    Args:
        y_true: integer labels of the split.
        raw_probs: the uncalibrated model's probabilities on it.
        class_names: names in column order; the positive class is found as
            `keras_app.metrics.positive_index` finds it.
        target_sensitivity: None (or more than two classes): no threshold, argmax.
        temperature: already fitted on `raw_probs` (`fit_temperature`); None fits it.
        calibrated: the calibrated model's own probabilities on the split, where it has
            been saved with the fitted temperature; the threshold is chosen on them.
        refer_share: the share of the split's cases the refer band holds (`fit_refer_band`,
            on the same cases as the threshold); None: no band. Needs a threshold.
    """
    from keras_app.decision.metrics import expected_calibration_error, positive_index, rate_with_ci

    y = np.asarray(y_true, int)
    if temperature is None:
        temperature = fit_temperature(y, raw_probs)
    # The threshold is best chosen on what the saved model itself outputs (float32, after
    # its calibration layer): NumPy's float64 rescaling can differ in the last bits.
    probs = scale(raw_probs, temperature) if calibrated is None else np.asarray(calibrated)
    validation = {
        "n": int(len(y)),
        "ece_before": expected_calibration_error(y, raw_probs),
        "ece_after": expected_calibration_error(y, probs),
    }
    pos = positive_index(class_names) if len(class_names) == 2 else None
    threshold, band = None, {}
    if pos is not None and target_sensitivity is not None and 0 < (y == pos).sum() < len(y):
        threshold = choose_threshold(y == pos, probs[:, pos], target_sensitivity)
        decided = np.where(called_positive(probs[:, pos], threshold), pos, 1 - pos)
        validation["sensitivity"] = rate_with_ci(decided[y == pos] == pos)
        validation["specificity"] = rate_with_ci(decided[y != pos] != pos)
        if refer_share is not None:
            band = fit_refer_band(y == pos, probs[:, pos], threshold, refer_share)
    return OperatingPoint(
        temperature=temperature,
        positive_class=str(class_names[pos]) if pos is not None else None,
        threshold=threshold,
        target_sensitivity=target_sensitivity if threshold is not None else None,
        chosen_on=split,
        validation=validation,
        refer_band=band,
    )
