"""The image guard's maths: is an image like the training images, in the model's own features?

Mahalanobis distance to the training features' Gaussian, with a Ledoit-Wolf shrunk
covariance, following

- Lee, Lee, Lee and Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
  Samples and Adversarial Attacks", NeurIPS 2018 (Mahalanobis distance on a classifier's
  features, several depths);
- Ledoit and Wolf, "A well-conditioned estimator for large-dimensional covariance
  matrices", Journal of Multivariate Analysis 88(2):365-411, 2004 (the shrinkage).

Where Lee et al. weight one score per depth with a regression fitted on out-of-distribution
examples, here the mean-pooled features of the depths are concatenated into one vector and one
Gaussian is fitted to it: nothing out-of-distribution is used to fit, and the product computes
one distance. benchmarks/ood_study.py measured the choice (docs/GUARD.md).

Fitted on the training split's features; the limit is chosen on the validation split so that
a given share (about 99%) of its images pass. An image is flagged when its score is above the
limit. NumPy and scikit-learn only: a Keras layer holds `mean`, `precision` and `limit` as
weights and computes `score` in float32 (`score(..., dtype=np.float32)` is that computation).

Example:
    >>> guard = fit_guard(train_features, layers=("conv_pw_5_relu", "conv_pw_11_relu", "pool"),
    ...                   dims=(64, 128, 256))
    >>> guard = guard.with_limit(val_features, pass_rate=0.99)
    >>> guard.passes(test_features).mean()
    0.994
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

METHOD = "mahalanobis"
CITATION = (
    "Lee et al., A Simple Unified Framework for Detecting Out-of-Distribution Samples and "
    "Adversarial Attacks, NeurIPS 2018; covariance shrinkage: Ledoit and Wolf, J. Multivariate "
    "Analysis 88(2):365-411, 2004"
)
# The issue: the limit lets about 99% of validation images through.
DEFAULT_PASS_RATE = 0.99


@dataclass(frozen=True, eq=False)
class FeatureGuard:
    """A fitted Mahalanobis guard: what a Keras layer needs as weights, and its provenance.

    Attributes:
        mean: float64 `[k, d]`, the training features' mean (k = 1), or one mean per class
            with a shared covariance (k = classes, Lee et al.'s form); the score is the
            distance to the nearest mean.
        precision: float64 `[d, d]`, the inverse of the shrunk covariance (symmetric,
            positive definite).
        limit: an image is flagged when its score is above this; None before `with_limit`.
        pass_rate: the share of the limit's split the limit was chosen to pass.
        layers: what the feature vector is made of, in order (e.g. a backbone layer's
            mean-pooled output, then the penultimate "pool" features).
        dims: the width each of `layers` contributes (they sum to d).
        shrinkage: the Ledoit-Wolf shrinkage intensity (0: sample covariance, 1: scaled
            identity).
        n_fit: how many feature rows the Gaussian was fitted on.
        chosen_on: the split the limit was chosen on.
        validation: what the limit gave there: n and the pass rate with its 95% Wilson interval.
        method: "mahalanobis".
        citation: the papers followed.
    """

    mean: np.ndarray
    precision: np.ndarray
    limit: float | None = None
    pass_rate: float | None = None
    layers: tuple[str, ...] = ()
    dims: tuple[int, ...] = ()
    shrinkage: float | None = None
    n_fit: int = 0
    chosen_on: str = "val"
    validation: dict = field(default_factory=dict)
    method: str = METHOD
    citation: str = CITATION

    def __post_init__(self):
        mean = np.atleast_2d(np.asarray(self.mean, np.float64))
        precision = np.asarray(self.precision, np.float64)
        d = mean.shape[1]
        if mean.ndim != 2 or precision.shape != (d, d):
            raise ValueError(
                "FeatureGuard needs mean [k, d] and precision [d, d]. "
                f"Received mean {mean.shape}, precision {precision.shape}"
            )
        if self.method != METHOD:
            raise ValueError(f"FeatureGuard implements {METHOD!r}. Received method={self.method!r}")
        if self.dims and sum(self.dims) != d:
            raise ValueError(f"dims must sum to the feature width {d}. Received dims={self.dims}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "dims", tuple(int(x) for x in self.dims))

    @property
    def width(self) -> int:
        """d, the feature width the guard takes."""
        return self.mean.shape[1]

    @property
    def num_weights(self) -> int:
        """Numbers a Keras layer holds: the means, the precision matrix and the limit."""
        return self.mean.size + self.precision.size + 1

    def score(self, features, dtype=np.float64) -> np.ndarray:
        """The squared Mahalanobis distance of each row to the nearest mean, `[n]`.

        Args:
            features: `[n, d]`, built as the guard's were (same layers, same order).
            dtype: float64 for fitting and reports; float32 computes what a float32 Keras
                layer computes.
        """
        x = np.asarray(features, dtype)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(
                f"expected features of shape [n, {self.width}]. Received {np.shape(features)}"
            )
        precision = self.precision.astype(dtype)
        scores = []
        for mu in self.mean.astype(dtype):
            diff = x - mu
            scores.append(np.einsum("nd,nd->n", diff @ precision, diff))
        return np.min(scores, axis=0)

    def passes(self, features) -> np.ndarray:
        """bool `[n]`: True where the image is like the training images (score <= limit)."""
        if self.limit is None:
            raise ValueError("the guard has no limit yet: call with_limit on validation features")
        return self.score(features) <= self.limit

    def with_limit(
        self, features, pass_rate: float = DEFAULT_PASS_RATE, split: str = "val"
    ) -> FeatureGuard:
        """A copy whose limit lets `pass_rate` of `features` (a validation split's) through."""
        from keras_app.metrics import rate_with_ci

        scores = self.score(features)
        limit = choose_limit(scores, pass_rate)
        validation = {"n": int(len(scores)), "pass_rate": rate_with_ci(scores <= limit)}
        return dataclasses.replace(
            self, limit=limit, pass_rate=float(pass_rate), chosen_on=split, validation=validation
        )

    def describe(self) -> str:
        """One line: the method, the features, the limit and what it passed where chosen."""
        feats = " + ".join(f"{n} ({w})" for n, w in zip(self.layers, self.dims, strict=True))
        line = f"Mahalanobis (Ledoit-Wolf) on {feats or f'{self.width} features'}"
        if self.limit is not None:
            line += f", flagged above {self.limit:.4g}"
            rate = self.validation.get("pass_rate") or {}
            if rate.get("value") is not None:
                line += f" ({rate['value']:.1%} of {self.chosen_on} passes)"
        return line

    def to_dict(self) -> dict:
        """A JSON-serialisable record (arrays as nested lists)."""
        record = dataclasses.asdict(self)
        record["mean"] = self.mean.tolist()
        record["precision"] = self.precision.tolist()
        record["layers"], record["dims"] = list(self.layers), list(self.dims)
        return record

    @classmethod
    def from_dict(cls, record: dict) -> FeatureGuard:
        """From `to_dict`'s record; unknown keys (a later version's) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


def fit_guard(
    features,
    labels=None,
    *,
    layers: Sequence[str] = (),
    dims: Sequence[int] = (),
) -> FeatureGuard:
    """Fits the Gaussian of the training features, without a limit yet.

    Args:
        features: `[n, d]` training-split features (n > d is not required: the shrinkage
            keeps the covariance invertible).
        labels: None for one mean (the method docs/GUARD.md chose); int class per row for
            one mean per class and a shared covariance of the within-class deviations.
        layers, dims: what the columns are, for the record (see `FeatureGuard`).

    Raises:
        ValueError: fewer than two rows, non-finite features, or labels of the wrong length.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"fit_guard needs features [n >= 2, d]. Received {np.shape(features)}")
    if not np.isfinite(x).all():
        raise ValueError("fit_guard received non-finite features")
    if labels is None:
        mean = x.mean(axis=0, keepdims=True)
        centred = x - mean
    else:
        y = np.asarray(labels)
        if y.shape != (len(x),):
            raise ValueError(f"labels must be [n={len(x)}]. Received {y.shape}")
        classes = np.unique(y)
        mean = np.stack([x[y == c].mean(axis=0) for c in classes])
        centred = x - mean[np.searchsorted(classes, y)]
    estimate = LedoitWolf(assume_centered=True).fit(centred)
    precision = estimate.precision_
    return FeatureGuard(
        mean=mean,
        precision=(precision + precision.T) / 2,  # exactly symmetric, for float32 layers
        layers=tuple(layers),
        dims=tuple(dims) or (x.shape[1],),
        shrinkage=float(estimate.shrinkage_),
        n_fit=len(x),
    )


def choose_limit(scores, pass_rate: float = DEFAULT_PASS_RATE) -> float:
    """The limit that lets at least `pass_rate` of `scores` through (score <= limit).

    Halfway between the last passing score and the next one, as `choose_threshold` does:
    the same decisions on this split, with a margin against float32 rounding in a layer.

    Raises:
        ValueError: pass_rate outside (0, 1], or no finite scores.
    """
    if not 0 < pass_rate <= 1:
        raise ValueError(f"pass_rate must be in (0, 1]. Received pass_rate={pass_rate}")
    s = np.sort(np.asarray(scores, np.float64))
    if len(s) == 0 or not np.isfinite(s).all():
        raise ValueError("choose_limit needs finite scores. Received none or non-finite ones")
    k = math.ceil(pass_rate * len(s) - 1e-9)  # how many must pass
    k = max(k, 1)
    if k >= len(s):
        return float(s[-1] + max(abs(s[-1]) * 1e-6, 1e-9))
    return float((s[k - 1] + s[k]) / 2)
