"""How many labelled local images a site needs before its operating point can be refitted.

A threshold chosen for sensitivity S on n positives reaches at least S there, but what
a hospital needs to know is how low the true sensitivity may be: the Wilson 95% lower
bound of what was observed. The rule (`SampleSize`), for each class:

- needed: the fewest cases for which observing the planned rate (the target sensitivity
  on the positives; `PLANNED_SPECIFICITY` on the negatives) puts the Wilson lower bound
  at or above the stated level (`--min-sensitivity`, `--min-specificity`);
- floor: the fewest cases for which even a perfect result (n of n) clears the level.
  Below it no outcome could show the level, so a refit is refused; between the floor and
  the need it goes ahead with a warning (the bound may fall short even at the target).

With the defaults (target 0.97, levels 0.90 and 0.70, planned specificity 0.85): 53
positives and 25 negatives needed, floors 35 and 9. NumPy and SciPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The sensitivity the Wilson 95% lower bound must clear: below 0.90 a screening aid misses
# more than one pneumonia in ten, which a reader cannot be asked to make up for.
MIN_SENSITIVITY = 0.90
# The specificity bound to clear: 0.70 keeps false alarms to under a third of the normal
# films; below that the aid adds more reading than it saves.
MIN_SPECIFICITY = 0.70
# The specificity a site plans for when counting its negatives: 0.85, the bar for
# a useful screening aid at sensitivity 0.95 (README model on its own test split: 0.945).
PLANNED_SPECIFICITY = 0.85
Z95 = 1.959963984540054  # the two-sided 95% normal quantile of the Wilson interval


def wilson_lower(k: int, n: int, z: float = Z95) -> float:
    """The Wilson score interval's lower bound for k successes in n (0 for n = 0)."""
    if n <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def cases_needed(rate: float, level: float, limit: int = 100_000) -> int:
    """The fewest n such that observing `rate` (k = ceil(rate * n)) gives a Wilson lower
    bound >= `level`.

    Raises:
        ValueError: `level` is not below `rate`, or either is outside (0, 1].
    """
    if not (0 < level < rate <= 1):
        raise ValueError(
            "the level must be below the planned rate, both in (0, 1]. "
            f"Received rate={rate}, level={level}"
        )
    for n in range(1, limit + 1):
        if wilson_lower(math.ceil(rate * n - 1e-9), n) >= level:
            return n
    raise ValueError(f"more than {limit} cases needed for rate={rate}, level={level}")


def floor_cases(level: float) -> int:
    """The fewest n for which a perfect result (n of n) has a Wilson lower bound >= `level`:
    n >= z^2 * level / (1 - level)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1). Received level={level}")
    n = max(1, math.ceil(Z95 * Z95 * level / (1 - level) - 1e-9))
    while wilson_lower(n, n) < level:  # rounding at the boundary
        n += 1
    return n


@dataclass(frozen=True)
class SampleSize:
    """What a local refit needs, per class, for its stated levels.

    Attributes:
        target_sensitivity: the sensitivity the threshold is chosen to reach.
        min_sensitivity, min_specificity: the levels the Wilson lower bounds must clear.
        planned_specificity: the specificity the negatives are counted for.
    """

    target_sensitivity: float
    min_sensitivity: float = MIN_SENSITIVITY
    min_specificity: float = MIN_SPECIFICITY
    planned_specificity: float = PLANNED_SPECIFICITY

    def __post_init__(self):
        if not self.min_sensitivity < self.target_sensitivity:
            raise ValueError(
                "--min-sensitivity must be below --target-sensitivity. Received "
                f"min_sensitivity={self.min_sensitivity}, target={self.target_sensitivity}"
            )
        if not 0 < self.min_specificity < self.planned_specificity:
            raise ValueError(
                f"--min-specificity must be in (0, {self.planned_specificity}). "
                f"Received min_specificity={self.min_specificity}"
            )

    @property
    def positives_needed(self) -> int:
        return cases_needed(self.target_sensitivity, self.min_sensitivity)

    @property
    def negatives_needed(self) -> int:
        return cases_needed(self.planned_specificity, self.min_specificity)

    @property
    def positives_floor(self) -> int:
        return floor_cases(self.min_sensitivity)

    @property
    def negatives_floor(self) -> int:
        return floor_cases(self.min_specificity)

    def statement(self, positives: int, negatives: int) -> str:
        """One line: what the target needs, and what the local data has."""
        return (
            f"sample size: for sensitivity {self.target_sensitivity:g} to show a Wilson 95% "
            f"lower bound >= {self.min_sensitivity:g} takes {self.positives_needed} positives "
            f"(floor {self.positives_floor}); specificity {self.planned_specificity:g} "
            f"with a bound >= {self.min_specificity:g} takes {self.negatives_needed} negatives "
            f"(floor {self.negatives_floor}). Local data to fit on: {positives} positives, "
            f"{negatives} negatives"
        )

    def shortfall(self, positives: int, negatives: int) -> str | None:
        """Why the counts are below the floor (a refit is refused), or None."""
        short = []
        if positives < self.positives_floor:
            short.append(f"{positives} positives (floor {self.positives_floor})")
        if negatives < self.negatives_floor:
            short.append(f"{negatives} negatives (floor {self.negatives_floor})")
        if not short:
            return None
        return (
            f"too few labelled local images to refit: {' and '.join(short)}; below the floor "
            "not even a perfect result could show the stated levels (--min-sensitivity "
            f"{self.min_sensitivity:g}, --min-specificity {self.min_specificity:g})"
        )

    def below_need(self, positives: int, negatives: int) -> str | None:
        """A warning when the counts clear the floor but not the need, else None."""
        if positives >= self.positives_needed and negatives >= self.negatives_needed:
            return None
        return (
            "warning: fewer local cases than the target needs: the Wilson lower bounds may "
            "fall below the stated levels even where the point reaches its target"
        )
