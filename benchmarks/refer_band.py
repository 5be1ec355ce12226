"""What a refer band would cost and give on a run: docs/GUARD.md's "The refer band" table.

    PYTHONPATH=. python benchmarks/refer_band.py RUN_DIR --shares 0.05 0.1 [--out FILE.json]

For each share, the band is fitted on the run's validation split exactly as
`python -m keras_app.train --refer-band SHARE` fits it (`fit_refer_band` on the calibrated
P(positive) of every validation image, around the run's own threshold), then judged on the
test split's analysed images (those the run's image guard lets through) with the one rule
the product uses (`OperatingPoint.referred`, `refer_summary`): the share referred with its
Wilson 95% interval, sensitivity and specificity of the decided images, and both again with
every referred image read by a person (called positive). Nothing is fitted on test; the
model, its temperature, threshold and guard are the run's, untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 64


def ci(rate: dict | None) -> str:
    if not rate or rate.get("value") is None:
        return "-"
    return f"{rate['value']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}] ({rate['k']}/{rate['n']})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    args = p.parse_args(argv)

    from keras_app.core.cli import import_tensorflow

    import_tensorflow()
    import data_pipelines
    from keras_app.decision.metrics import decision_metrics, positive_index, refer_summary
    from keras_app.decision.operating_point import check_refer_share, fit_refer_band
    from keras_app.inference.predictor import open_run

    shares = [check_refer_share(s) for s in args.shares]
    start = time.perf_counter()
    predictor = open_run(args.run)
    op, names, config = predictor.operating_point, predictor.class_names, predictor.config
    if op.threshold is None:
        print(f"error: {args.run} stores no threshold: no band to place", file=sys.stderr)
        return 2
    data = data_pipelines.load_dataset(
        config["data"],
        val_fraction=config.get("val_fraction", 0.1),
        seed=config.get("seed", 42),
        report=lambda m: None,
    )
    pos = positive_index(names, op.positive_class)
    scored = {}
    for split in ("val", "test"):
        probs, ood = predictor.score_split(data.splits[split], BATCH)
        analysed = op.analysed(ood) if ood is not None else np.ones(len(probs), bool)
        scored[split] = (np.asarray(data.splits[split].labels), probs, analysed)
    y_val, p_val, _ = scored["val"]
    y_test, p_test, kept = scored["test"]
    rows = [
        {
            "share": None,
            "band": None,
            "test": {
                "n": int(kept.sum()),
                "referred": None,
                "decided": decision_metrics(y_test[kept], p_test[kept], names, op),
            },
        }
    ]
    for share in shares:
        band = fit_refer_band(y_val == pos, p_val[:, pos], op.threshold, share)
        banded = dataclasses.replace(op, refer_band=band)
        rows.append(
            {
                "share": share,
                "band": band,
                "test": refer_summary(y_test[kept], p_test[kept], names, banded),
            }
        )
    record = {
        "run": str(args.run),
        "threshold": op.threshold,
        "operating_point_version": op.version,
        "val_n": int(len(y_val)),
        "test_n": int(len(y_test)),
        "test_analysed": int(kept.sum()),
        "rows": rows,
        "command": "PYTHONPATH=. python benchmarks/refer_band.py "
        + " ".join([str(args.run), "--shares", *map(str, args.shares)]),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(table(record))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))
    return 0


def table(record: dict) -> str:
    """The markdown table of docs/GUARD.md."""
    lines = [
        f"threshold {record['threshold']:.4f} (operating point v{record['operating_point_version']}"
        f"); val {record['val_n']} images; test {record['test_n']} images, "
        f"{record['test_analysed']} analysed",
        "",
        "| share (val) | band [low, high) | val referred | test referred | decided: sensitivity "
        "| decided: specificity | referred read: sensitivity | referred read: specificity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        test, band = row["test"], row["band"]
        decided = test.get("decided") or {}
        refs = test.get("with_referrals") or {}
        lines.append(
            "| "
            + " | ".join(
                [
                    "off" if row["share"] is None else f"{row['share']:g}",
                    "-" if band is None else f"[{band['low']:.4f}, {band['high']:.4f})",
                    "-" if band is None else ci(band["validation"]["referred"]),
                    ci(test.get("referred")),
                    ci(decided.get("sensitivity")),
                    ci(decided.get("specificity")),
                    ci(refs.get("sensitivity")),
                    ci(refs.get("specificity")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
