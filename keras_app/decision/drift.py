"""Watching a deployed model: its scores and decisions against the reference it was fitted on.

The reference is what the operating point was chosen on (training's validation split,
or a site's local calibration images): the calibrated P(positive) of each image there.
Each check has a documented limit (`LIMITS`); `checks` says which are crossed. NumPy and
SciPy only: the monitor's page and its TensorBoard scalars both read these numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Drift tests on fewer images than this say nothing: with 50 images PSI's ten bins hold
# five each and one image moves a bin's share by two points. Below it a check reads
# "too few" and raises no alert.
MIN_IMAGES = 50
PSI_BINS = 10  # deciles of the reference scores: the convention PSI is quoted in


@dataclass(frozen=True)
class Limit:
    """One alert limit and why it is where it is."""

    name: str
    value: float
    why: str


LIMITS = {
    "psi": Limit(
        "score PSI",
        0.25,
        "population stability index over the reference's score deciles; > 0.25 is the "
        "conventional 'major shift' (0.10 to 0.25 'moderate', shown but not alerted)",
    ),
    "ks": Limit(
        "score KS p-value",
        0.01,
        "two-sample Kolmogorov-Smirnov test of the scores against the reference; alerts when "
        "p < 0.01 and the statistic D > 0.15 (with thousands of images a trivial difference is "
        "'significant': D, the largest gap between the two score CDFs, says it matters)",
    ),
    "positive_rate": Limit(
        "positive rate difference",
        0.15,
        "share of analysed images called positive against the reference's share at the same "
        "threshold; more than 15 points apart means the population or the model moved "
        "(a season moves it by a few points)",
    ),
    "not_analysed": Limit(
        "not-analysed rate",
        0.05,
        "share of images the image guard refused or that could not be read; above 5% the "
        "node is being sent what it was not made for (another body part, another modality)",
    ),
    "latency_p95": Limit(
        "latency p95 (ms)",
        5000.0,
        "95th percentile of the per-image answer time; over twice the DICOM node's measured "
        "end-to-end p95 (2.31 s on 2 CPU cores, docs/BENCHMARKS.md): a queue backing up",
    ),
}
KS_MIN_STATISTIC = 0.15  # the effect size the KS alert also needs (see LIMITS["ks"])
PSI_MODERATE = 0.10


def psi(reference, observed, bins: int = PSI_BINS) -> float:
    """The population stability index of `observed` against `reference`.

    Bins are the reference's quantiles (ties merged), so each holds about 1/bins of it;
    sum over bins of (o - r) * ln(o / r), shares floored at 1e-4 so that an empty bin
    counts as a large shift rather than an infinite one.
    """
    reference, observed = np.asarray(reference, float), np.asarray(observed, float)
    if len(reference) == 0 or len(observed) == 0:
        raise ValueError("psi needs scores on both sides. Received an empty one")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    o = np.bincount(np.searchsorted(edges, observed, side="right"), minlength=len(edges) + 1)
    r = np.maximum(r / r.sum(), 1e-4)
    o = np.maximum(o / o.sum(), 1e-4)
    return float(np.sum((o - r) * np.log(o / r)))


def ks(reference, observed) -> tuple[float, float]:
    """(D, p-value) of the two-sample Kolmogorov-Smirnov test (scipy)."""
    from scipy.stats import ks_2samp

    found = ks_2samp(np.asarray(reference, float), np.asarray(observed, float))
    return float(found.statistic), float(found.pvalue)


@dataclass(frozen=True)
class Check:
    """One check's figure against its limit.

    Attributes:
        key: a key of `LIMITS`.
        value: the figure (None where there was too little to compute it).
        alert: whether the limit is crossed.
        note: what the figure means here, in words.
    """

    key: str
    value: float | None
    alert: bool
    note: str

    @property
    def limit(self) -> Limit:
        return LIMITS[self.key]


def checks(
    reference_scores,
    reference_positive_rate: float,
    scores,
    called_positive,
    not_analysed: int,
    latencies_ms: Sequence[float],
) -> list[Check]:
    """Every check of one window of use.

    Args:
        reference_scores: calibrated P(positive) on the reference images.
        reference_positive_rate: the reference's share called positive at the threshold.
        scores: calibrated P(positive) of the analysed images of the window.
        called_positive: bool per analysed image.
        not_analysed: images of the window refused by the guard or unreadable.
        latencies_ms: per image of the window.
    """
    scores = np.asarray(scores, float)
    n = len(scores)
    few = n < MIN_IMAGES
    too_few = f"too few analysed images to judge ({n} < {MIN_IMAGES})"
    out = []
    if few:
        out += [Check("psi", None, False, too_few), Check("ks", None, False, too_few)]
    else:
        value = psi(reference_scores, scores)
        moderate = " (moderate shift)" if PSI_MODERATE < value <= LIMITS["psi"].value else ""
        out.append(Check("psi", value, value > LIMITS["psi"].value, f"PSI {value:.3f}{moderate}"))
        d, p = ks(reference_scores, scores)
        alert = p < LIMITS["ks"].value and d > KS_MIN_STATISTIC
        out.append(Check("ks", p, alert, f"D {d:.3f}, p {p:.2g}"))
    rate = float(np.mean(called_positive)) if n else None
    if few or rate is None:
        out.append(Check("positive_rate", None, False, too_few))
    else:
        gap = rate - reference_positive_rate
        out.append(
            Check(
                "positive_rate",
                abs(gap),
                abs(gap) > LIMITS["positive_rate"].value,
                f"{rate:.3f} called positive against {reference_positive_rate:.3f} on the "
                f"reference ({gap:+.3f})",
            )
        )
    total = n + not_analysed
    share = not_analysed / total if total else None
    if total < MIN_IMAGES:
        out.append(Check("not_analysed", share, False, f"too few images ({total} < {MIN_IMAGES})"))
    else:
        alert = share > LIMITS["not_analysed"].value
        out.append(Check("not_analysed", share, alert, f"{not_analysed} of {total} images"))
    if len(latencies_ms):
        p95 = float(np.percentile(latencies_ms, 95))
        alert = p95 > LIMITS["latency_p95"].value
        out.append(Check("latency_p95", p95, alert, f"p95 {p95:.0f} ms"))
    else:
        out.append(Check("latency_p95", None, False, "no latency recorded"))
    return out
