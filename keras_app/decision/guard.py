"""The image guard's maths: is an image like the training images, in the model's own features?

Mahalanobis distances to Gaussians of the training features at several depths, each with a
Ledoit-Wolf shrunk covariance, following

- Lee, Lee, Lee and Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
  Samples and Adversarial Attacks", NeurIPS 2018 (Mahalanobis distance on a classifier's
  features, one score per depth, combined);
- Ledoit and Wolf, "A well-conditioned estimator for large-dimensional covariance
  matrices", Journal of Multivariate Analysis 88(2):365-411, 2004 (the shrinkage).

Where Lee et al. weight the depths' scores with a regression fitted on out-of-distribution
examples, here each depth's score is divided by its own validation percentile (so that 1.0
is where that depth alone would pass the target share) and the largest one counts: nothing
out-of-distribution is used to fit. benchmarks/ood_study.py measured the choice against
single-depth, concatenated, k-nearest-neighbour, energy and softmax scores (docs/GUARD.md).

The Gaussians are fitted on the training split's features: the training images as they are
and once more under the run's training augmentation (docs/GUARD.md: without the augmented
view, a third of films turned 5 to 15 degrees were refused; with it, none). The scales and the
limit are chosen on the validation split so that a given share (about 99%) of its images pass. An
image is flagged when its score is above the limit. NumPy and scikit-learn only: a Keras
layer holds each block's mean and precision (divided by its scale) and the limit as weights
and computes `score` in float32 (`score(..., dtype=np.float32)` is that computation).

Example:
    >>> guard = fit_guard(train_features, layers=("conv_pw_5_relu", "conv_pw_11_relu",
    ...                   "pool"), dims=(64, 128, 256))
    >>> guard = guard.with_limit(val_features, pass_rate=0.99)
    >>> guard.passes(test_features).mean()
    0.995
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
    """A fitted guard: what a Keras layer needs as weights, and where it came from.

    The feature vector is the concatenation of blocks (one per depth, `dims` wide each, in
    `layers` order). Each block has a Gaussian; its score is the squared Mahalanobis distance
    to the nearest of its means, divided by its scale; the guard's score is the largest
    block score.

    Attributes:
        means: per block, float64 `[k, d_b]`: the training features' mean (k = 1), or one mean
            per class with a shared covariance (k = classes, Lee et al.'s form).
        precisions: per block, float64 `[d_b, d_b]`, the inverse of the shrunk covariance
            (symmetric, positive definite).
        scales: per block, the divisor of its distance (1.0 until `with_limit`).
        limit: an image is flagged when its score is above this; None before `with_limit`.
        pass_rate: the share of the limit's split the scales and limit were chosen to pass.
        layers: the block names (e.g. a backbone layer's mean-pooled output, then "pool").
        dims: each block's width.
        shrinkage: per block, the Ledoit-Wolf intensity (0: sample covariance, 1: scaled
            identity).
        n_fit: how many feature rows the Gaussians were fitted on.
        chosen_on: the split the scales and limit were chosen on.
        validation: what the limit gave there: n and the pass rate with its 95% Wilson interval.
        method: "mahalanobis".
        citation: the papers followed.
    """

    means: tuple[np.ndarray, ...]
    precisions: tuple[np.ndarray, ...]
    scales: tuple[float, ...] = ()
    limit: float | None = None
    pass_rate: float | None = None
    layers: tuple[str, ...] = ()
    dims: tuple[int, ...] = ()
    shrinkage: tuple[float, ...] = ()
    n_fit: int = 0
    chosen_on: str = "val"
    validation: dict = field(default_factory=dict)
    method: str = METHOD
    citation: str = CITATION

    def __post_init__(self):
        means = tuple(np.atleast_2d(np.asarray(m, np.float64)) for m in self.means)
        precisions = tuple(np.asarray(p, np.float64) for p in self.precisions)
        if not means or len(means) != len(precisions):
            raise ValueError(
                "FeatureGuard needs one mean and one precision per block. "
                f"Received {len(means)} means, {len(precisions)} precisions"
            )
        dims = tuple(m.shape[1] for m in means)
        for m, p in zip(means, precisions, strict=True):
            if m.ndim != 2 or p.shape != (m.shape[1], m.shape[1]):
                raise ValueError(
                    "each block needs mean [k, d] and precision [d, d]. "
                    f"Received mean {m.shape}, precision {p.shape}"
                )
        if self.dims and tuple(self.dims) != dims:
            raise ValueError(f"dims must be the blocks' widths {dims}. Received dims={self.dims}")
        scales = tuple(float(s) for s in self.scales) or (1.0,) * len(means)
        if len(scales) != len(means) or min(scales) <= 0:
            raise ValueError(f"scales must be {len(means)} positive numbers. Received {scales}")
        if self.method != METHOD:
            raise ValueError(f"FeatureGuard implements {METHOD!r}. Received method={self.method!r}")
        layers = tuple(self.layers) or tuple(f"block{i}" for i in range(len(means)))
        if len(layers) != len(means):
            raise ValueError(f"layers must name {len(means)} blocks. Received layers={layers}")
        for name, value in (
            ("means", means),
            ("precisions", precisions),
            ("scales", scales),
            ("layers", layers),
            ("dims", dims),
            ("shrinkage", tuple(float(s) for s in self.shrinkage)),
        ):
            object.__setattr__(self, name, value)

    @property
    def width(self) -> int:
        """d, the feature width the guard takes (the blocks' widths summed)."""
        return sum(self.dims)

    @property
    def num_weights(self) -> int:
        """Numbers a Keras layer holds: means, precisions, scales and the limit."""
        blocks = sum(m.size + p.size for m, p in zip(self.means, self.precisions, strict=True))
        return blocks + len(self.scales) + 1

    def block_scores(self, features, dtype=np.float64) -> np.ndarray:
        """`[n, blocks]`: each block's squared distance to its nearest mean, unscaled."""
        x = np.asarray(features, dtype)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(
                f"expected features of shape [n, {self.width}]. Received {np.shape(features)}"
            )
        out, start = [], 0
        for means, precision in zip(self.means, self.precisions, strict=True):
            block = x[:, start : start + means.shape[1]]
            start += means.shape[1]
            precision = precision.astype(dtype)
            per_mean = [
                np.einsum("nd,nd->n", (block - mu) @ precision, block - mu)
                for mu in means.astype(dtype)
            ]
            out.append(np.min(per_mean, axis=0))
        return np.stack(out, axis=1)

    def score(self, features, dtype=np.float64) -> np.ndarray:
        """`[n]`: the largest scaled block score (higher: less like the training images).

        Args:
            features: `[n, d]`, the blocks' features concatenated in `layers` order.
            dtype: float64 for fitting and reports; float32 computes what a float32 Keras
                layer computes.
        """
        scales = np.asarray(self.scales, dtype)
        return (self.block_scores(features, dtype) / scales).max(axis=1)

    def passes(self, features) -> np.ndarray:
        """bool `[n]`: True where the image is like the training images (score <= limit)."""
        if self.limit is None:
            raise ValueError("the guard has no limit yet: call with_limit on validation features")
        return self.score(features) <= self.limit

    def with_limit(
        self, features, pass_rate: float = DEFAULT_PASS_RATE, split: str = "val"
    ) -> FeatureGuard:
        """A copy scaled and limited on `features` (a validation split's).

        Each block's scale is its own `pass_rate` percentile there; the limit then lets
        `pass_rate` of the images through on the largest scaled score.
        """
        from keras_app.decision.metrics import rate_with_ci

        if not 0 < pass_rate <= 1:
            raise ValueError(f"pass_rate must be in (0, 1]. Received pass_rate={pass_rate}")
        raw = self.block_scores(features)
        scales = tuple(
            max(float(np.quantile(raw[:, b], pass_rate)), 1e-12) for b in range(raw.shape[1])
        )
        scaled = dataclasses.replace(self, scales=scales)
        scores = scaled.score(features)
        limit = choose_limit(scores, pass_rate)
        validation = {"n": int(len(scores)), "pass_rate": rate_with_ci(scores <= limit)}
        return dataclasses.replace(
            scaled, limit=limit, pass_rate=float(pass_rate), chosen_on=split, validation=validation
        )

    def describe(self) -> str:
        """One line: the method, the features, the limit and what it passed where chosen."""
        blocks = " + ".join(f"{n} ({w})" for n, w in zip(self.layers, self.dims, strict=True))
        line = f"Mahalanobis (Ledoit-Wolf), largest of {blocks}"
        if self.limit is not None:
            line += f", flagged above {self.limit:.4g}"
            rate = self.validation.get("pass_rate") or {}
            if rate.get("value") is not None:
                line += f" ({rate['value']:.1%} of {self.chosen_on} passes)"
        return line

    def to_dict(self) -> dict:
        """A JSON-serialisable record (arrays as nested lists)."""
        record = dataclasses.asdict(self)
        record["means"] = [m.tolist() for m in self.means]
        record["precisions"] = [p.tolist() for p in self.precisions]
        for name in ("scales", "layers", "dims", "shrinkage"):
            record[name] = list(getattr(self, name))
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
    """Fits one Gaussian per block of the training features, without scales or a limit yet.

    Args:
        features: `[n, d]` training-split features, the blocks concatenated: the plain
            images' rows and an augmented view's rows, stacked (n > d is not required: the
            shrinkage keeps each covariance invertible).
        labels: None for one mean per block (the method docs/GUARD.md chose); int class per
            row for one mean per class and a shared covariance of the within-class deviations.
        layers: a name per block.
        dims: each block's width, summing to d; () for one block of all d columns.

    Raises:
        ValueError: fewer than two rows, non-finite features, dims that do not sum to d,
            or labels of the wrong length.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"fit_guard needs features [n >= 2, d]. Received {np.shape(features)}")
    if not np.isfinite(x).all():
        raise ValueError("fit_guard received non-finite features")
    dims = tuple(int(w) for w in dims) or (x.shape[1],)
    if sum(dims) != x.shape[1] or min(dims) < 1:
        raise ValueError(f"dims must sum to the feature width {x.shape[1]}. Received dims={dims}")
    if labels is None:
        index, classes = np.zeros(len(x), int), [0]
    else:
        y = np.asarray(labels)
        if y.shape != (len(x),):
            raise ValueError(f"labels must be [n={len(x)}]. Received {y.shape}")
        classes, index = np.unique(y, return_inverse=True)
    means, precisions, shrinkage = [], [], []
    for start, width in zip(np.cumsum((0, *dims[:-1])), dims, strict=True):
        block = x[:, start : start + width]
        mean = np.stack([block[index == c].mean(axis=0) for c in range(len(classes))])
        estimate = LedoitWolf(assume_centered=True).fit(block - mean[index])
        means.append(mean)
        precisions.append((estimate.precision_ + estimate.precision_.T) / 2)  # exactly symmetric
        shrinkage.append(float(estimate.shrinkage_))
    return FeatureGuard(
        means=tuple(means),
        precisions=tuple(precisions),
        layers=tuple(layers),
        dims=dims,
        shrinkage=tuple(shrinkage),
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
    k = max(math.ceil(pass_rate * len(s) - 1e-9), 1)  # how many must pass
    if k >= len(s):
        return float(s[-1] + max(abs(s[-1]) * 1e-6, 1e-9))
    return float((s[k - 1] + s[k]) / 2)
