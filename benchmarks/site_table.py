"""The README model at three sites, before and after a local calibration: the docs/SITES.md table.

    python benchmarks/sites.py --out /work/scratch/sites
    PYTHONPATH=. python benchmarks/site_table.py /work/scratch/runs/readme \
        --sites /work/scratch/sites --work /work/scratch/site28/table

Every figure comes from the product's own commands, printed as they run: for each site,
a copy of the run is judged on the site's `rest/` as trained (`evaluate`), then copies are
calibrated on its `local/` (at most 200 labelled images) with AdaBN off, on and auto
(`calibrate ... --force`, so that each is judged whatever its levels said) and judged on
`rest/` again. `rest/` is never fitted or tuned on. Then `predict --usage-log` and
`monitor` on the whole test split and on each shifted site. The run folder is only read.
With --reuse, a step whose output is already in --work is not run again.

The AUC intervals are bootstrapped on the model's own scores, predicted here and scored as
evaluate scores them (predictions.csv rounds to 6 decimals, which ties the saturated
scores of a shifted site).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SITES = {
    "siteA": "test split, unchanged (control)",
    "siteB": "test split as another site renders it",
    "siteC": "PneumoniaMNIST, 28 px upscaled",
}
VARIANTS = ("off", "on", "auto")
PYTHON = sys.executable


REUSE = False  # --reuse: skip a step whose output exists
# The levels calibrate judges a point by (its defaults): Wilson lower bounds.
LEVELS = {"sensitivity": 0.90, "specificity": 0.70}


def command(*args: str, ok=(0,), output: Path | None = None):
    print("$ python -m " + " ".join(str(a) for a in args), flush=True)
    if REUSE and output is not None and output.exists():
        print(f"(reused: {output})", flush=True)
        return None
    done = subprocess.run([PYTHON, "-m", *map(str, args)], capture_output=True, text=True)
    print(done.stdout.rstrip(), flush=True)
    if done.returncode not in ok:
        raise SystemExit(f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done


def copy_run(run: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("eval-*", "operating_points"))
    return target


def judged(folder: Path, run: Path, site: Path) -> dict:
    """Sensitivity and specificity with their Wilson intervals, AUC with a bootstrap interval,
    ECE, and the optimistic specificity at sensitivity 0.95 (chosen on the judged images)."""
    import data_pipelines
    from keras_app.decision.resampling import auc_with_ci
    from keras_app.inference.predictor import open_run

    record = json.loads((folder / "metrics.json").read_text())
    rest = data_pipelines.load_dataset(str(site / "rest"), whole=True, report=print)
    split = rest.splits["all"]
    probs = open_run(run).predict_split(split).astype("float64")
    # As evaluate scores them (rows renormalised in float64): where P(PNEUMONIA) saturates
    # at float32's 1.0, P(NORMAL) still ranks the films.
    p = (probs / probs.sum(axis=1, keepdims=True))[:, 1]
    y = split.labels == 1
    auc = auc_with_ci(y, p)
    assert abs(auc["value"] - record["metrics"]["roc_auc"]) < 1e-6, (auc, folder)
    applied = record["operating_point"]["applied"]
    optimistic = record.get("optimistic") or {}
    return {
        "sensitivity": applied["sensitivity"],
        "specificity": applied["specificity"],
        "auc": auc,
        "ece": record["metrics"]["ece"],
        "threshold": applied["threshold"],
        "oracle_specificity": (optimistic.get("specificity") or {}).get("value"),
    }


def calibrated(run: Path, site: Path, variant: str, work: Path) -> dict:
    copy = work / f"{site.name}-{variant}"
    if not (REUSE and (copy / "operating_points" / "v2.json").exists()):
        copy = copy_run(run, copy)
    command(
        "keras_app.calibrate", copy, "--data", site / "local", "--adabn", variant, "--force",
        output=copy / "operating_points" / "v2.json",
    )  # fmt: skip
    op = json.loads((copy / "operating_point.json").read_text())
    evaluate(copy, site, work / f"eval-{site.name}-{variant}")
    row = judged(work / f"eval-{site.name}-{variant}", copy, site)
    local = op["provenance"]["figures"]["fit"]["after"]
    clears = all(local[rate]["low"] >= level for rate, level in LEVELS.items())
    return {
        **row,
        "temperature": op["temperature"],
        "adopted": op["provenance"]["adabn"]["adopted"],
        "clears_levels": clears,
        "local_specificity": local["specificity"],
    }


def evaluate(run: Path, site: Path, out: Path) -> None:
    command(
        "keras_app.evaluate", run, "--data", site / "rest", "--out", out,
        "--optimistic-threshold", "0.95", output=out / "metrics.json",
    )  # fmt: skip


def monitored(run: Path, images: Path, name: str, work: Path) -> dict:
    log = work / "logs" / f"{name}.jsonl"
    if not (REUSE and log.exists()):
        log.unlink(missing_ok=True)
    command("keras_app.predict", images, "--model", run, "--usage-log", log, "--csv", output=log)
    out = work / f"monitor-{name}"
    command("keras_app.monitor", log, "--reference", run, "--out", out, ok=(0, 1), output=out)
    record = json.loads((out / "monitor.json").read_text())
    values = {c["check"]: c["value"] for c in record["checks"]}
    exit_status = 1 if record["alerts"] else 0  # the monitor's documented rule
    return {"exit": exit_status, "alerts": record["alerts"], **values}


def ci(rate: dict) -> str:
    return f"{rate['value']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}]"


def table(rows: list[dict]) -> str:
    lines = [
        "| site | operating point | AdaBN | sensitivity | specificity | ROC AUC | ECE | "
        "spec. at sens. 0.95, optimistic |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        auc = r["auc"]
        lines.append(
            f"| {r['site']} | {r['point']} | {r['adabn']} | {ci(r['sensitivity'])} | "
            f"{ci(r['specificity'])} | {auc['value']:.4f} [{auc['low']:.4f}, {auc['high']:.4f}] | "
            f"{r['ece']:.3f} | {r['oracle_specificity']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the README run folder (only read)")
    p.add_argument("--sites", type=Path, default=Path("/work/scratch/sites"))
    p.add_argument("--work", type=Path, default=Path("/work/scratch/site28/table"))
    p.add_argument("--test", type=Path, default=Path("../shared/data/chest_xray_224/test"))
    p.add_argument("--reuse", action="store_true", help="skip steps whose output exists")
    args = p.parse_args(argv)
    global REUSE
    REUSE = args.reuse
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KERAS_APP_LOG_KEY_FILE", str(args.work / "usage_log.key"))
    rows, results = [], {}
    trained = args.work / "trained"
    if not (args.reuse and trained.exists()):
        copy_run(args.run, trained)
    for site in SITES:
        folder = args.sites / site
        evaluate(trained, folder, args.work / f"eval-{site}-trained")
        found = judged(args.work / f"eval-{site}-trained", trained, folder)
        rows.append({"site": site, "point": "v1, training's", "adabn": "-"} | found)
        for variant in VARIANTS:
            found = calibrated(args.run, folder, variant, args.work)
            adopted = "yes" if found["adopted"] else "no"
            label = f"auto: {adopted}" if variant == "auto" else adopted
            levels = "" if found["clears_levels"] else ", below the levels: not made current"
            point = f"v2, local (T {found['temperature']:.2f}{levels})"
            rows.append(found | {"site": site, "point": point, "adabn": label})
    results["monitor"] = {
        "test split, training's point": monitored(trained, args.test, "test", args.work),
        "siteB rest, training's point": monitored(
            trained, args.sites / "siteB" / "rest", "siteB-trained", args.work
        ),
        "siteC rest, training's point": monitored(
            trained, args.sites / "siteC" / "rest", "siteC-trained", args.work
        ),
        "siteB rest, after calibrate (auto)": monitored(
            args.work / "siteB-auto", args.sites / "siteB" / "rest", "siteB-auto", args.work
        ),
    }
    results["rows"] = rows
    (args.work / "site_table.json").write_text(json.dumps(results, indent=2, default=str))
    print(table(rows))
    for name, found in results["monitor"].items():
        gap = found["positive_rate"]
        print(
            f"monitor, {name}: exit {found['exit']}, alerts {found['alerts']}, "
            f"PSI {found['psi']:.3f}, positive-rate gap {gap:.3f}"
        )


if __name__ == "__main__":
    main()
