"""Issue 27's recipe study: recipes that cannot lean on the borders, trained and audited.

Each candidate is the README chest X-ray command (MobileNet v1 alpha 0.25, ImageNet
weights, the default recipe of docs/RECIPES.md) plus its flags. One at a time, under
`nice`, each is trained, then audited on the validation split (`keras_app.audit
--split val`); `--test` audits the test split too, for the record. The table is read
back from each run folder (metrics.json, history.json, audit/*/audit.json), so a rerun
skips what is done and only prints.

The choice, on validation only: the candidates whose val ROC AUC is within 0.003 of
the best, then the lowest lungs-erased val AUC. The test columns are never used.

Usage:
    python benchmarks/shortcut_study.py --data ../shared/data/chest_xray_224 \\
        --root /tmp/shortcut-runs [--only NAME,...] [--test] [--nice 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BASE = ["--model", "mobilenet", "--weights", "imagenet"]
# "readme" is the recipe of the README command before issue 27: no flag of its own.
CANDIDATES = {
    "readme": ["--outside-lungs", "none"],
    "swap": ["--outside-lungs", "swap"],
    "swap-p0.5": ["--outside-lungs", "swap", "--outside-lungs-p", "0.5"],
    "erase": ["--outside-lungs", "erase"],
    "crop": ["--outside-lungs", "none", "--thorax-crop"],
    "crop-swap": ["--outside-lungs", "swap", "--thorax-crop"],
}
# Val AUC within this of the best counts as level (one rerun moves it by 0.0006 to 0.002,
# docs/RECIPES.md); among those, the lowest lungs-erased val AUC wins.
LEVEL = 0.003


def audit_of(run: Path, split: str) -> dict:
    found = sorted((run / "audit").glob(f"{split}-*/audit.json"))
    return json.loads(found[0].read_text()) if found else {}


def row(name: str, run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    val, test = audit_of(run, "val"), audit_of(run, "test")

    def auc(record, variant):
        fill = record.get("fill", "constant")
        return (record.get("occlusion", {}).get(fill, {}).get(variant) or {}).get("roc_auc")

    def share(record, method):
        per = record.get("attribution", {}).get(method, {}).get("per_class", {})
        return (per.get("PNEUMONIA") or {}).get("median")

    return {
        "name": name,
        "flags": " ".join(CANDIDATES.get(name, [])),
        "val_auc": metrics["val"]["roc_auc"],
        "val": {v: auc(val, v) for v in ("lungs_only", "lungs_erased", "borders_only")},
        "val_gradcam": share(val, "gradcam"),
        "val_occlusion": share(val, "occlusion"),
        "test_auc": metrics["test"]["roc_auc"],
        "test_sens": metrics["test"].get("sensitivity"),
        "test_spec": metrics["test"].get("specificity"),
        "test": {v: auc(test, v) for v in ("lungs_only", "lungs_erased", "borders_only")},
        "test_gradcam": share(test, "gradcam"),
        "epochs": len(history),
        "train_s": round(sum(h.get("epoch_seconds", 0) for h in history)),
    }


def fmt(value, digits=4) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        if value.get("value") is None:
            return "-"
        return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"
    return f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    header = (
        "| recipe | flags | val AUC | val lungs only | val lungs erased | val borders only | "
        "val Grad-CAM in lungs (PNEUMONIA) | val occlusion in lungs (PNEUMONIA) | test AUC | "
        "test lungs erased | test Grad-CAM in lungs (PNEUMONIA) | test sens | test spec | "
        "epochs | train s |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | `{r['flags']}` | {fmt(r['val_auc'])} | "
            f"{fmt(r['val']['lungs_only'])} | {fmt(r['val']['lungs_erased'])} | "
            f"{fmt(r['val']['borders_only'])} | {fmt(r['val_gradcam'], 2)} | "
            f"{fmt(r['val_occlusion'], 2)} | {fmt(r['test_auc'])} | "
            f"{fmt(r['test']['lungs_erased'])} | {fmt(r['test_gradcam'], 2)} | "
            f"{fmt(r['test_sens'])} | {fmt(r['test_spec'])} | {r['epochs']} | {r['train_s']} |"
        )
    return "\n".join(lines)


def choose(rows: list[dict]) -> tuple[str, str]:
    """The winner by the rule above, and the sentence saying why."""
    best = max(r["val_auc"] for r in rows)
    level = [r for r in rows if r["val_auc"] >= best - LEVEL and r["val"]["lungs_erased"]]
    winner = min(level, key=lambda r: r["val"]["lungs_erased"]["value"])
    names = ", ".join(r["name"] for r in level)
    return winner["name"], (
        f"best val AUC {best:.4f}; within {LEVEL} of it: {names}; lowest lungs-erased val AUC "
        f"among them: {winner['name']} ({winner['val']['lungs_erased']['value']:.3f})"
    )


def run(cmd: list[str], nice: int, log: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    with log.open("a") as out:
        subprocess.run(["nice", "-n", str(nice), *cmd], check=True, stdout=out, stderr=out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--only", default=",".join(CANDIDATES))
    p.add_argument("--test", action="store_true", help="audit the test split too")
    p.add_argument("--nice", type=int, default=10)
    args = p.parse_args(argv)
    names = args.only.split(",")
    rows = []
    for name in names:
        folder = args.root / name
        log = args.root / f"{name}.log"
        args.root.mkdir(parents=True, exist_ok=True)
        if not (folder / "metrics.json").is_file():
            train = [sys.executable, "-m", "keras_app.train", *BASE, "--data", args.data]
            run([*train, "--run-dir", str(folder), *CANDIDATES[name]], args.nice, log)
        for split in ("val", "test") if args.test else ("val",):
            if not audit_of(folder, split):
                run([sys.executable, "-m", "keras_app.audit", str(folder), "--split", split],
                    args.nice, log)  # fmt: skip
        rows.append(row(name, folder))
    print(table(rows))
    print()
    winner, why = choose(rows)
    print(f"chosen on validation: {winner} ({why})")


if __name__ == "__main__":
    main()
