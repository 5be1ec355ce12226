"""The model card's "What the model looks at": the shortcut audits beside a run (issue 27)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from keras_app.artifacts.folders import AUDIT_EXAMPLES, AUDIT_FIGURE, AUDIT_JSON, read_json
from keras_app.reports.card_blocks import NOT_RECORDED, Section

TITLE = "What the model looks at"
FILLED = {
    "constant": "a constant mid-grey, the same for every film",
    "mean": "the mean of the pixels kept",
    "blur": "a blur of the pixels kept",
}
VARIANT_NAMES = {
    "full": "full films",
    "lungs_only": "lung region only",
    "lungs_erased": "lung region erased",
    "borders_only": "border bands only",
}


def interval(rate: dict | None) -> str:
    if not rate or rate.get("value") is None:
        return NOT_RECORDED
    if rate.get("low") is None:
        return f"{rate['value']:.3f}"
    return f"{rate['value']:.3f} ({rate['low']:.3f} to {rate['high']:.3f})"


def share(summary: dict | None) -> str:
    if not summary or summary.get("median") is None:
        return NOT_RECORDED
    return (
        f"{summary['median']:.0%} (IQR {summary['q25']:.0%}-{summary['q75']:.0%}; "
        f"region {summary['area']:.0%} of the film)"
    )


def audit_section(audits: Sequence[Path]) -> Section:
    """One block per audit folder: the verdict, the occlusion table at its fill, the
    attribution shares per class, its figures."""
    s = Section(TITLE)
    if not audits:
        return s.p(
            f"{NOT_RECORDED}: no shortcut audit beside this folder (python -m keras_app.audit "
            "FOLDER). Models trained on chest X-rays can learn the hospital, the positioning "
            "and the markers instead of the disease; the audit measures how much this one does."
        )
    for folder in audits:
        record = read_json(folder / AUDIT_JSON, {})
        data, fill = record.get("data", {}), record.get("fill", "constant")
        region = record.get("region", {}).get("definition", NOT_RECORDED)
        s.p(
            f"{folder.name}: {data.get('name')}, split {data.get('split')}, {data.get('n')} "
            f"films. Verdict: {record.get('verdict', NOT_RECORDED)}. What is removed is filled "
            f"with {FILLED.get(fill, fill)}; the lung region is {region}."
        )
        rows = [
            [
                VARIANT_NAMES.get(v, v),
                interval(m.get("roc_auc")),
                interval(m.get("sensitivity")),
                interval(m.get("specificity")),
            ]
            for v, m in (record.get("occlusion", {}).get(fill) or {}).items()
        ]
        s.table(["the model sees", "ROC AUC (95% CI)", "sensitivity", "specificity"], rows)
        attribution = record.get("attribution", {})
        classes = sorted(
            {c for m in attribution.values() if "per_class" in m for c in m["per_class"]}
        )
        s.table(
            ["share inside the lung region (median)", *classes],
            [
                [
                    title,
                    *[share(attribution.get(key, {}).get("per_class", {}).get(c)) for c in classes],
                ]
                for key, title in (("gradcam", "Grad-CAM"), ("occlusion", "occlusion sensitivity"))
                if "per_class" in attribution.get(key, {})
            ],
        )
        s.img(
            folder / AUDIT_FIGURE,
            f"ROC AUC with the lung region or the borders removed, {folder.name}",
        )
        s.img(
            folder / AUDIT_EXAMPLES,
            f"Films, what each variant keeps, and their maps, {folder.name}",
        )
    return s
