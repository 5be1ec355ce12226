"""The operating point: what turns a model's probabilities into a screening decision.

Both parts are fitted on the validation split after training, never on the
split that is judged:
- temperature scaling (Guo et al., "On Calibration of Modern Neural Networks",
  ICML 2017): one scalar T divides the log-probabilities; it changes how
  confident the model is, never how it ranks images (AUC is unchanged);
- the decision threshold on the positive class's calibrated probability: the
  one whose validation sensitivity reaches the target with the best specificity.

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

    @property
    def guard_limit(self) -> float | None:
        return self.guard.get("limit")

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
) -> OperatingPoint:
    """Fits the temperature, then the threshold for `target_sensitivity`, on one split.

    Args:
        y_true: integer labels of the split.
        raw_probs: the uncalibrated model's probabilities on it.
        class_names: names in column order; the positive class is found as
            `keras_app.metrics.positive_index` finds it.
        target_sensitivity: None (or more than two classes): no threshold, argmax.
        temperature: already fitted on `raw_probs` (`fit_temperature`); None fits it.
        calibrated: the calibrated model's own probabilities on the split, where it has
            been saved with the fitted temperature; the threshold is chosen on them.
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
    threshold = None
    if pos is not None and target_sensitivity is not None and 0 < (y == pos).sum() < len(y):
        threshold = choose_threshold(y == pos, probs[:, pos], target_sensitivity)
        decided = np.where(called_positive(probs[:, pos], threshold), pos, 1 - pos)
        validation["sensitivity"] = rate_with_ci(decided[y == pos] == pos)
        validation["specificity"] = rate_with_ci(decided[y != pos] != pos)
    return OperatingPoint(
        temperature=temperature,
        positive_class=str(class_names[pos]) if pos is not None else None,
        threshold=threshold,
        target_sensitivity=target_sensitivity if threshold is not None else None,
        chosen_on=split,
        validation=validation,
    )
