"""The model card as data: titled sections of blocks, and how a recorded value is shown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NOT_RECORDED = "not recorded"
PAPER = 'Mitchell et al., "Model Cards for Model Reporting", FAT* 2019, doi:10.1145/3287560.3287596'
INTENDED_USE = (
    "Research, teaching and the comparison of training recipes on medical images. "
    "Not for diagnostic use: this model is not a medical device, has not been validated "
    "clinically, and must not inform the care of any patient."
)
ETHICS = (
    "Images of patients are sensitive data: keep them under the terms they were shared on. "
    "A screening model that misses disease harms the patients it misses; one that over-calls "
    "it burdens patients and clinicians with follow-up. Models trained on one hospital's "
    "images can learn its scanners, labels and markers instead of the disease, and perform "
    "worse, unevenly, on other populations. Demographic factors (age, sex, ethnicity) were "
    "not recorded, so performance across them is unknown."
)


@dataclass
class Section:
    """One titled section: a list of blocks, each `(kind, payload)`.

    Kinds: "p" text; "kv" `[(label, value)]`; "table" `(header, rows)`;
    "img" `(path, caption)`; "code" text.
    """

    title: str
    blocks: list = field(default_factory=list)

    def p(self, text: str) -> Section:
        self.blocks.append(("p", text))
        return self

    def kv(self, pairs: Sequence[tuple[str, object]]) -> Section:
        self.blocks.append(("kv", [(k, shown(v)) for k, v in pairs]))
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Section:
        self.blocks.append(("table", (list(header), [[shown(c) for c in r] for r in rows])))
        return self

    def img(self, path: Path, caption: str) -> Section:
        if path.is_file():
            self.blocks.append(("img", (path, caption)))
        else:
            self.p(f"{caption}: {NOT_RECORDED} ({path.name} is absent).")
        return self

    def code(self, text: str) -> Section:
        self.blocks.append(("code", text))
        return self


def shown(value) -> str:
    """A recorded value as text; None (and NaN) read "not recorded"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_RECORDED
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {shown(v)}" for k, v in value.items())
    return str(value)


def with_ci(rate: dict | None) -> str:
    """A rate with its recorded 95% Wilson interval and counts."""
    if not rate or rate.get("value") is None:
        return NOT_RECORDED
    return (
        f"{rate['value']:.3f} (95% CI {rate['low']:.3f} to {rate['high']:.3f}; "
        f"{rate['k']} of {rate['n']})"
    )
