"""The shortcut audit's folder: audit.json, report.md and its figures (keras_app.audit).

audit.json     every number, the verdict, what was judged and how
report.md      the page to read
auc.png        ROC AUC with its interval per variant and fill, the limit drawn
examples.png   films of each class: the region, what each variant keeps, Grad-CAM
               on the fixed scale, occlusion sensitivity
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import numpy as np

from keras_app.artifacts.folders import (
    AUDIT_EXAMPLES,
    AUDIT_FIGURE,
    AUDIT_JSON,
    EVALUATION_REPORT,
)
from keras_app.core import files
from keras_app.core.errors import UsageError
from keras_app.evaluation import attribution
from keras_app.evaluation.audit import (
    VARIANTS,
    AuditConfig,
    attribution_audit,
    default_out,
    load_inputs,
    occlusion_audit,
    region_record,
    variant_images,
    verdict,
)
from keras_app.reports import overlays, plots

AUDIT_REPORT, AUC_FIGURE, EXAMPLES_FIGURE = EVALUATION_REPORT, AUDIT_FIGURE, AUDIT_EXAMPLES
# Films of each class in examples.png.
EXAMPLES = 2


def run_audit(config: AuditConfig, predictor) -> Path:
    """Audits `predictor` as `config` asks, writes the folder and prints the summary.

    Returns:
        The audit folder.
    """
    inputs = load_inputs(config, predictor)
    out = default_out(config, predictor, inputs.judged)
    if out.exists() and any(out.iterdir()) and not (out / AUDIT_JSON).is_file():
        raise UsageError(f"--out {out} holds files that are not an audit; choose another")
    occlusion = occlusion_audit(predictor, inputs, config)
    attributions = attribution_audit(predictor, inputs, config)
    record = {
        "config": dataclasses.asdict(config),
        "command": command_line(config),
        "model": predictor.describe(),
        "data": {
            "spec": inputs.judged.spec,
            "name": inputs.judged.data.name,
            "split": inputs.judged.name,
            "split_note": inputs.judged.note,
            "n": int(len(inputs.labels)),
            "class_mapping": inputs.class_note,
        },
        "fill": config.fill,
        "limit": config.limit,
        "verdict": verdict(occlusion, config.fill, config.limit),
        "region": region_record(inputs, predictor.class_names),
        "occlusion": occlusion,
        "attribution": attributions,
    }
    with files.atomic_directory(out, overwrite=True) as tmp:
        auc_figure(record).savefig(tmp / AUC_FIGURE, dpi=plots.DPI)
        examples_figure(predictor, inputs, config).savefig(tmp / EXAMPLES_FIGURE, dpi=plots.DPI)
        files.write_json_atomic(tmp / AUDIT_JSON, record)
        files.write_text_atomic(tmp / AUDIT_REPORT, report_markdown(record))
    print_summary(out, record)
    return out


def command_line(config: AuditConfig) -> str:
    defaults = AuditConfig(model="")
    argv = ["python", "-m", "keras_app.audit", config.model]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name != "model" and value != getattr(defaults, f.name):
            argv += [f"--{f.name.replace('_', '-')}", str(value)]
    return shlex.join(argv)


# --- the page ------------------------------------------------------------------------------------


def ci(rate: dict | None, digits: int = 3) -> str:
    if not rate or rate.get("value") is None:
        return "n/a"
    if rate.get("low") is None:
        return f"{rate['value']:.{digits}f}"
    return f"{rate['value']:.{digits}f} [{rate['low']:.{digits}f}, {rate['high']:.{digits}f}]"


def occlusion_rows(per_variant: dict) -> list[list[str]]:
    return [
        [
            variant,
            VARIANTS[variant],
            ci(m["roc_auc"]),
            ci(m["sensitivity"]),
            ci(m["specificity"]),
        ]
        for variant, m in per_variant.items()
    ]


def share_rows(per_class: dict) -> list[list[str]]:
    def pct(v):
        return "n/a" if v is None else f"{v:.0%}"

    return [
        [
            name,
            str(s["n"] - s["blank"]) + (f" ({s['blank']} blank)" if s["blank"] else ""),
            pct(s["mean"]),
            pct(s["median"]),
            f"{pct(s['q25'])}-{pct(s['q75'])}",
            pct(s["area"]),
        ]
        for name, s in per_class.items()
    ]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def report_markdown(record: dict) -> str:
    data, region = record["data"], record["region"]
    lines = [
        f"# What the model looks at: {record['model']['path']}",
        "",
        f"**Verdict:** {record['verdict']}.",
        "",
        f"Judged: {data['name']}, split {data['split']} ({data['n']} films); {data['split_note']}.",
        "",
        f"Lung region: {region['definition']}. Box prior on {region['fallback_rate']:.1%} of "
        "the films: "
        + ", ".join(
            f"{name} {c['fell_back']} of {c['n']} (area {c['area']:.0%} of the film)"
            for name, c in region["per_class"].items()
        )
        + f". Borders: the {region['borders']}.",
        "",
    ]
    op = record["model"]["operating_point"]
    for fill, per_variant in record["occlusion"].items():
        said = {
            "constant": "a constant mid-grey (128), the same for every film",
            "mean": "the mean of the pixels kept",
            "blur": "a blur of the pixels kept (sigma 10% of the side)",
        }[fill]
        lines += [
            f"## Occlusion, filled with {said}"
            + (" (the verdict's)" if fill == record["fill"] else ""),
            "",
            *table(
                [
                    "variant",
                    "what the model sees",
                    "ROC AUC [95% CI]",
                    "sensitivity",
                    "specificity",
                ],
                occlusion_rows(per_variant),
            ),
            "",
        ]
    lines += [
        f"Sensitivity and specificity at the stored operating point (threshold "
        f"{op.get('threshold')}, {op.get('positive_class')}), Wilson intervals; the AUC "
        "interval is a stratified bootstrap.",
        "",
        "## Attribution: share of each map inside the lung region",
        "",
        "Each film's map explains its own class. An evenly spread map would score the "
        "region's area share (last column).",
        "",
    ]
    for method, title in (("gradcam", "Grad-CAM"), ("occlusion", "Occlusion sensitivity")):
        found = record["attribution"].get(method)
        if not found or "skipped" in found:
            lines += [f"{title}: skipped ({(found or {}).get('skipped', 'no images')}).", ""]
            continue
        lines += [
            f"### {title}",
            "",
            *table(
                ["class", "films", "mean", "median", "IQR", "region area"],
                share_rows(found["per_class"]),
            ),
            "",
        ]
        if method == "occlusion":
            lines += [
                f"Patch {found['patch']:.3f} of the side, moved by {found['stride']:.3f}, "
                "filled with the image's mean; the map is the fall in the class's log-odds.",
                "",
            ]
        for member in found.get("members", []):
            lines += [f"Member {member['name']} (weight {member['weight']:.2f}):", ""]
            lines += [
                *table(
                    ["class", "films", "mean", "median", "IQR", "region area"],
                    share_rows(member["per_class"]),
                ),
                "",
            ]
    lines += [
        "![ROC AUC per variant](auc.png)",
        "",
        "![Examples](examples.png)",
        "",
        "## Reproduce",
        "",
        "```sh",
        record["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def print_summary(out: Path, record: dict) -> None:
    fill = record["fill"]
    shown = ", ".join(f"{v} {ci(m['roc_auc'], 3)}" for v, m in record["occlusion"][fill].items())
    print(f"ROC AUC ({fill} fill): {shown}", flush=True)
    for method in ("gradcam", "occlusion"):
        found = record["attribution"].get(method) or {}
        if "per_class" in found:
            parts = ", ".join(
                f"{name} {s['median']:.0%}"
                for name, s in found["per_class"].items()
                if s["median"] is not None
            )
            print(f"{method} mass inside the lung region (median per class): {parts}", flush=True)
    print(record["verdict"], flush=True)
    print(f"audit folder: {out}", flush=True)


# --- figures -------------------------------------------------------------------------------------


def auc_figure(record: dict):
    fig = plots.new_figure(7.5, 4.0)
    ax = fig.add_subplot()
    variants = list(VARIANTS)
    fills = record["occlusion"]
    for k, (fill, per_variant) in enumerate(fills.items()):
        x = np.arange(len(variants)) + (k - (len(fills) - 1) / 2) * 0.2
        values = [per_variant[v]["roc_auc"] for v in variants]
        y = [v["value"] or np.nan for v in values]
        low = [v["value"] - v["low"] if v.get("low") is not None else 0 for v in values]
        high = [v["high"] - v["value"] if v.get("high") is not None else 0 for v in values]
        ax.errorbar(x, y, yerr=[low, high], fmt="o", capsize=4, label=f"{fill} fill")
    ax.axhline(record["limit"], color="red", linestyle="--", label=f"limit {record['limit']:.2f}")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xticks(range(len(variants)), [v.replace("_", " ") for v in variants])
    ax.set_ylim(0.3, 1.02)
    ax.set_ylabel("ROC AUC (95% CI)")
    ax.set_title(f"What the model ranks by: {record['data']['split']} split")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def examples_figure(predictor, inputs, config: AuditConfig):
    """Rows: films of each class. Columns: the film with its lung region, lungs erased,
    borders only, Grad-CAM on the fixed scale, occlusion sensitivity (one scale)."""
    from keras_app.evaluation.audit_models import explainable_members

    picked = attribution.sample_per_class(inputs.labels, EXAMPLES, config.seed + 1)
    images, labels = inputs.images[picked], inputs.labels[picked]
    members, _ = explainable_members(predictor)
    heat = None
    if len(members) == 1:
        evidence, _ = members[0].evidence(images, inputs.regions.region[picked], labels)
        heat = np.clip(evidence / overlays.EVIDENCE_SCALE, 0, 1)
    occl = attribution.occlusion_sensitivity(
        lambda x: predictor.predict(x, config.batch_size), images.astype(np.float32), labels
    )
    occl_top = max(float(occl.max()), 1e-6)
    columns = ["film, lung region", "lungs erased", "borders only", "Grad-CAM", "occlusion"]
    fig = plots.new_figure(3.0 * len(columns), 3.2 * len(picked) + 0.6)
    fig.set_layout_engine("constrained")
    axes = np.asarray(fig.subplots(len(picked), len(columns), squeeze=False))
    probs = predictor.predict(images.astype(np.float32), config.batch_size)
    for r, i in enumerate(picked):
        name = predictor.class_names[labels[r]]
        shown = [
            variant_images(images[r : r + 1], inputs.regions.subset([i]), v, config.fill)[0]
            for v in ("full", "lungs_erased", "borders_only")
        ]
        for c, image in enumerate(shown):
            ax = axes[r, c]
            ax.imshow(image)
            ax.contour(inputs.regions.region[i], levels=[0.5], colors=overlays.OUTLINE_COLOUR)
            ax.set_title(columns[c] if r == 0 else "", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"{name}\nP({name})={probs[r, labels[r]]:.3f}", fontsize=10)
        if heat is not None:
            overlays.draw_heatmap_overlay(
                axes[r, 3],
                images[r],
                heat[r],
                "Grad-CAM" if r == 0 else "",
                fontsize=10,
                colorbar=r == len(picked) - 1,
            )
        else:
            axes[r, 3].set_axis_off()
        axes[r, 4].imshow(images[r])
        axes[r, 4].imshow(
            overlays.heat_rgba(np.clip(occl[r] / occl_top, 0, 1)), interpolation="bilinear"
        )
        axes[r, 4].contour(inputs.regions.region[i], levels=[0.5], colors=overlays.OUTLINE_COLOUR)
        axes[r, 4].set_title(
            f"occlusion (top {occl_top:.1f} log-odds)" if r == 0 else "", fontsize=10
        )
        axes[r, 4].set_xticks([])
        axes[r, 4].set_yticks([])
    fig.suptitle(f"Each film's evidence for its own class ({config.fill} fill)")
    return fig
