"""Clinical classification metrics from labels and probabilities (scikit-learn does the math).

Decisions are never made here: every function that reports decisions takes the
`OperatingPoint` that makes them (`OperatingPoint.decide`, the one rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn import metrics as skm

if TYPE_CHECKING:
    from keras_app.decision.operating_point import OperatingPoint

# Names that mark the class a screening test must not miss.
POSITIVE_NAMES = ("pneumonia", "positive", "abnormal", "disease")
# Equal-width confidence bins for ECE and the reliability diagram: Guo et al. (2017) use 15.
CALIBRATION_BINS = 15


def positive_index(class_names, positive_class: str | None = None) -> int | None:
    """Index of the positive class: the one named, else one named like PNEUMONIA, else
    the second of two. None for more than two classes with none named."""
    names = [str(c) for c in class_names]
    if positive_class is not None:
        if positive_class not in names:
            raise ValueError(
                f"Unknown positive class. Received positive_class={positive_class!r}; "
                f"classes: {names}"
            )
        return names.index(positive_class)
    for i, name in enumerate(names):
        if name.lower() in POSITIVE_NAMES:
            return i
    return 1 if len(names) == 2 else None


def calibration_bins(y_true, probs, n_bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per equal-width bin of top-class confidence: count, mean confidence, accuracy.

    The count-weighted mean of |accuracy - confidence| over these bins is the
    ECE (`expected_calibration_error`); the reliability diagram draws them.
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    finite = np.isfinite(confidence)  # a diverged model's NaN rows go in no bin
    index = np.where(finite, np.minimum((np.where(finite, confidence, 0) * n_bins), n_bins - 1), -1)
    index = index.astype(int)
    bins = []
    for b in range(n_bins):
        inside = index == b
        bins.append(
            {
                "low": b / n_bins,
                "high": (b + 1) / n_bins,
                "count": int(inside.sum()),
                "confidence": float(confidence[inside].mean()) if inside.any() else None,
                "accuracy": float(correct[inside].mean()) if inside.any() else None,
            }
        )
    return bins


def expected_calibration_error(y_true, probs, n_bins: int = CALIBRATION_BINS) -> float:
    """ECE of the top-class confidence, equal-width bins (Guo et al. 2017)."""
    n = len(np.asarray(y_true))
    if not np.isfinite(np.asarray(probs, dtype=np.float64)).all():
        return float("nan")  # not a calibration to report
    bins = [b for b in calibration_bins(y_true, probs, n_bins) if b["count"]]
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins))


def rate_with_ci(hits, confidence: float = 0.95) -> dict:
    """A proportion with its Wilson score interval (scipy's binomtest).

    Args:
        hits: booleans, one per case (e.g. "positive case called positive").

    Returns:
        {"value", "low", "high", "k", "n"}; value and bounds None for no cases.
    """
    from scipy.stats import binomtest

    hits = np.asarray(hits, bool)
    k, n = int(hits.sum()), int(hits.size)
    if n == 0:
        return {"value": None, "low": None, "high": None, "k": 0, "n": 0}
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return {"value": k / n, "low": float(ci.low), "high": float(ci.high), "k": k, "n": n}


def classification_metrics(
    y_true,
    probs,
    class_names,
    *,
    positive_class: str | None = None,
    operating_point: OperatingPoint | None = None,
) -> dict:
    """Accuracy, ROC/PR AUC, sensitivity, specificity, F1, log-loss, Brier, ECE, per class.

    Args:
        y_true: integer labels [n].
        probs: class probabilities [n, classes].
        class_names: names in the probabilities' column order.
        positive_class: the class whose recall is "sensitivity" (two classes); default
            the operating point's, else the one named like PNEUMONIA.
        operating_point: decides each row (`OperatingPoint.decide`); None decides by
            the most probable class.

    Returns:
        A JSON-ready dict.
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = decisions(probs, class_names, operating_point)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 +- 1e-7
    n_classes = probs.shape[1]
    labels = list(range(n_classes))
    if positive_class is None and operating_point is not None:
        positive_class = operating_point.positive_class
    pos = positive_index(class_names, positive_class) if n_classes == 2 else None
    threshold = operating_point.threshold if operating_point is not None else None
    present = np.unique(y_true)
    out = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "log_loss": float(skm.log_loss(y_true, probs, labels=labels)),  # sklearn clips at float eps
        "ece": expected_calibration_error(y_true, probs),
        "macro_f1": float(
            skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["per_class"] = {
        str(name): {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(class_names)
    }
    if pos is not None:
        is_pos = (y_true == pos).astype(int)
        score = probs[:, pos]
        tn, fp, fn, tp = skm.confusion_matrix(
            is_pos, (y_pred == pos).astype(int), labels=[0, 1]
        ).ravel()
        out.update(
            positive_class=str(class_names[pos]),
            threshold=0.5 if threshold is None else float(threshold),  # 0.5: argmax of two
            sensitivity=float(tp / (tp + fn)) if tp + fn else float("nan"),
            specificity=float(tn / (tn + fp)) if tn + fp else float("nan"),
            precision=float(tp / (tp + fp)) if tp + fp else 0.0,
            f1=float(skm.f1_score(is_pos, (y_pred == pos).astype(int), zero_division=0)),
            brier=float(skm.brier_score_loss(is_pos, score)),
        )
        if len(present) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(is_pos, score))
            out["pr_auc"] = float(skm.average_precision_score(is_pos, score))
    else:
        onehot = np.eye(n_classes)[y_true]
        out["brier"] = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
        if len(present) == n_classes:
            out["roc_auc"] = float(
                skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels)
            )
            out["pr_auc"] = float(skm.average_precision_score(onehot, probs, average="macro"))
    return out


def one_vs_rest(y_true, probs, y_pred=None) -> list[dict]:
    """Per class: specificity (of the decisions `y_pred`, default argmax), ROC AUC and PR AUC
    of that class against the rest (None where the split lacks the class or its complement)."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1) if y_pred is None else np.asarray(y_pred)
    out = []
    for c in range(probs.shape[1]):
        is_c = y_true == c
        negatives = int((~is_c).sum())
        true_negatives = int(((y_pred != c) & ~is_c).sum())
        both = 0 < is_c.sum() < len(is_c)
        out.append(
            {
                "specificity": true_negatives / negatives if negatives else None,
                "roc_auc": float(skm.roc_auc_score(is_c, probs[:, c])) if both else None,
                "pr_auc": float(skm.average_precision_score(is_c, probs[:, c])) if both else None,
            }
        )
    return out


def macro_average(per_class: dict[str, dict]) -> dict:
    """The unweighted mean over classes of each per-class value (classes where it is defined)."""
    keys = ("precision", "recall", "f1", "specificity", "roc_auc", "pr_auc")
    out = {}
    for key in keys:
        values = [v[key] for v in per_class.values() if v.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def decisions(probs, class_names, operating_point: OperatingPoint | None) -> np.ndarray:
    """The class index of each row, as `operating_point` decides (None: the most probable)."""
    if operating_point is None:
        return np.asarray(probs).argmax(axis=1)
    return operating_point.decide(probs, class_names)


def decision_metrics(y_true, probs, class_names, operating_point: OperatingPoint) -> dict:
    """A screening decision at the operating point's threshold: sensitivity and specificity
    with 95% Wilson intervals, precision, and the confusion matrix [[tn, fp], [fn, tp]]."""
    positive = operating_point.positive_index(class_names)
    if positive is None:
        raise ValueError(
            "decision_metrics needs an operating point with a threshold for one of two "
            f"classes. Received {operating_point.describe()!r} for classes {list(class_names)}"
        )
    is_pos = np.asarray(y_true) == positive
    called = operating_point.decide(probs, class_names) == positive
    tn, fp, fn, tp = skm.confusion_matrix(is_pos, called, labels=[False, True]).ravel()
    return {
        "threshold": float(operating_point.threshold),
        "sensitivity": rate_with_ci(called[is_pos]),
        "specificity": rate_with_ci(~called[~is_pos]),
        "precision": float(tp / (tp + fp)) if tp + fp else None,
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def evaluate_probs(
    y_true, probs, class_names, operating_point: OperatingPoint | None, positive_class=None
) -> dict:
    """Every metric of an evaluation report, JSON-ready.

    Args:
        operating_point: decides each row; None decides by the most probable class.
        positive_class: the class whose recall is sensitivity (two classes).

    Returns:
        {"metrics": classification_metrics plus per-class one-vs-rest and "macro",
         "classification_report": scikit-learn's, as a dict and as text}.
    """
    y_true = np.asarray(y_true).astype(int)
    names = [str(c) for c in class_names]
    metrics = classification_metrics(
        y_true, probs, names, positive_class=positive_class, operating_point=operating_point
    )
    y_pred = decisions(probs, names, operating_point)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    for name, values in zip(names, one_vs_rest(y_true, probs, y_pred), strict=True):
        metrics["per_class"][name].update(values)
    metrics["macro"] = macro_average(metrics["per_class"])
    labels = list(range(len(names)))
    report = {
        fmt: skm.classification_report(
            y_true,
            y_pred,
            labels=labels,
            target_names=names,
            zero_division=0,
            **({"output_dict": True} if fmt == "dict" else {"digits": 4}),
        )
        for fmt in ("dict", "text")
    }
    return {"metrics": metrics, "classification_report": report}


def guard_summary(labels, probs, analysed, class_names, operating_point: OperatingPoint) -> dict:
    """What the image guard did on judged images: the share it kept out (Wilson interval), and
    the screening figures with those counted as referrals (a person reads each one: caught
    if positive, a false alarm if not), where the operating point has a threshold."""
    analysed = np.asarray(analysed, bool)
    out = {
        "limit": operating_point.guard_limit,
        "n": int(len(analysed)),
        "not_analysed": rate_with_ci(~analysed),
        "analysed": rate_with_ci(analysed),
    }
    if operating_point.positive_index(class_names) is not None:
        out["with_referrals"] = with_referrals(
            labels,
            probs,
            ~analysed,
            class_names,
            operating_point,
            "images the guard kept out counted as referred (called positive)",
        )
    return out


def with_referrals(labels, probs, referred, class_names, operating_point, note: str) -> dict:
    """Sensitivity and specificity (Wilson) with each referred image read by a person: caught
    if positive, a false alarm if not (i.e. called positive); the others as decided."""
    positive = operating_point.positive_index(class_names)
    is_pos = np.asarray(labels) == positive
    called = (operating_point.decide(probs, class_names) == positive) | np.asarray(referred, bool)
    return {
        "sensitivity": rate_with_ci(called[is_pos]),
        "specificity": rate_with_ci(~called[~is_pos]),
        "note": note,
    }


def refer_summary(labels, probs, class_names, operating_point: OperatingPoint) -> dict:
    """What the refer band did on analysed images: the share referred (Wilson interval), the
    screening figures of the decided ones, and of all with the referred read by a person.
    {} where the operating point has no band."""
    if operating_point.refer_limits is None or operating_point.positive_index(class_names) is None:
        return {}
    labels, probs = np.asarray(labels), np.asarray(probs)
    referred = operating_point.referred(probs, class_names)
    low, high = operating_point.refer_limits
    return {
        "low": low,
        "high": high,
        "share": operating_point.refer_band.get("share"),
        "n": int(len(referred)),
        "referred": rate_with_ci(referred),
        "decided": decision_metrics(
            labels[~referred], probs[~referred], class_names, operating_point
        )
        if (~referred).any()
        else None,
        "with_referrals": with_referrals(
            labels,
            probs,
            referred,
            class_names,
            operating_point,
            "referred images counted as read by a person (called positive)",
        ),
    }


# Bootstrap resamples for an AUC's interval: 1,000 keeps the 2.5th and 97.5th
# percentiles within about 0.002 of their limit for the few hundred cases here.
BOOTSTRAP = 1000


def roc_auc_with_ci(
    is_positive, scores, *, n_boot: int = BOOTSTRAP, confidence: float = 0.95, seed: int = 0
) -> dict:
    """ROC AUC with a percentile bootstrap interval, resampling positives and negatives
    apart (a stratified bootstrap: every resample holds both classes, in their numbers).

    Args:
        is_positive: booleans, one per case.
        scores: the score of each case (higher: more likely positive).
        n_boot: resamples; 0 for the value alone.

    Returns:
        {"value", "low", "high", "n_pos", "n_neg", "n_boot"}; all None but the counts
        where a class is missing.
    """
    y = np.asarray(is_positive, bool)
    s = np.asarray(scores, np.float64)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    record = {"n_pos": int(pos.size), "n_neg": int(neg.size), "n_boot": int(n_boot)}
    if pos.size == 0 or neg.size == 0:
        return {"value": None, "low": None, "high": None, **record}
    value = float(skm.roc_auc_score(y, s))
    if n_boot < 1:
        return {"value": value, "low": None, "high": None, **record}
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    boots = np.empty(n_boot)
    for b in range(n_boot):
        picked = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        boots[b] = skm.roc_auc_score(labels, s[picked])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    return {"value": value, "low": float(low), "high": float(high), **record}
