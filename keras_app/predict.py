"""python -m keras_app.predict: classify image files with a local model or a TF Serving server.

    python -m keras_app.predict xrays/ scan.dcm --model saved_models/pneumonia
    python -m keras_app.predict 'xrays/*.jpeg' --server http://localhost:8501 --json
    python -m keras_app.predict xrays/ --grpc localhost:8500 --csv
    python -m keras_app.predict xrays/ --model runs/xception-20260101-120000 --gradcam heat/

Every backend is sent the same thing: each file's encoded bytes (JPEG, PNG, BMP
as they are; DICOM decoded here and re-encoded as lossless PNG, since the serving
graph cannot run pydicom), decoded and resized by the exported graph's own
`predict_image_bytes` signature, or by the same TensorFlow ops for a Keras model.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Sequence

from keras_app.core.cli import ArgumentParser, run_cli
from keras_app.core.errors import UsageError
from keras_app.decision.operating_point import NOT_ANALYSED, REFER
from keras_app.inference.serving_client import DEFAULT_TIMEOUT

OK = "ok"
# Exit status when some inputs could not be classified (the others are still printed).
SOME_FAILED = 2


# --- output --------------------------------------------------------------------------------------


def rows(inputs, scores) -> list[dict]:
    """One dict per input, in the order given: its status, and for an image the decision
    at the operating point ("refer" inside its refer band), the most probable class and
    every probability."""
    scored = iter(
        enumerate(zip(scores.decisions, scores.classes, scores.probabilities, strict=True))
        if scores
        else ()
    )
    out = []
    for item in inputs:
        row = {"file": str(item.path), "status": OK if item.ok else f"error: {item.error}"}
        if item.refused:  # the DICOM header says this is not an image the model reads
            out.append({**row, "status": f"{NOT_ANALYSED}: {item.refused}"})
            continue
        if item.ok:
            i, (decision, label, probs) = next(scored)
            refused = scores.not_analysed(i)
            if refused:  # no decision, no probability: nothing to act on
                row |= {
                    "status": f"{NOT_ANALYSED}: {refused}",
                    "ood_score": float(scores.ood_score[i]),
                }
                out.append(row)
                continue
            referred = scores.referred(i)
            if referred:  # the probability is shown, the decision is the reader's
                row["status"] = f"{REFER}: {referred}"
            row |= {
                "decision": REFER if referred else decision,
                "class": label,
                "probability": float(probs.max()),
                "probabilities": {n: float(p) for n, p in zip(scores.labels, probs, strict=True)},
            }
        out.append(row)
    return out


def format_table(records: list[dict]) -> str:
    cols = ("file", "decision", "class")
    width = {c: max([len(c)] + [len(r.get(c, "")) for r in records]) for c in cols}
    lines = ["  ".join(f"{c:<{width[c]}}" for c in cols) + "  probability  status"]
    for r in records:
        cells = "  ".join(f"{r.get(c, '-'):<{width[c]}}" for c in cols)
        prob = f"{r['probability']:.4f}" if "probability" in r else "-"
        lines.append(f"{cells}  {prob:<11}  {r['status']}")
    return "\n".join(lines)


def format_json(records: list[dict]) -> str:
    return json.dumps(records, indent=2)


def format_csv(records: list[dict]) -> str:
    labels = next((list(r["probabilities"]) for r in records if "probabilities" in r), [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "status", "decision", "class", "probability", *labels])
    for r in records:
        probs = r.get("probabilities", {})
        writer.writerow(
            [
                r["file"],
                r["status"],
                r.get("decision", ""),
                r.get("class", ""),
                f"{r['probability']:.6f}" if "probability" in r else "",
                *(f"{probs[name]:.6f}" if name in probs else "" for name in labels),
            ]
        )
    return buffer.getvalue().rstrip("\n")


def operating_point_note(predictor) -> str:
    """Where the decision and status columns come from, in one or two lines."""
    op = predictor.operating_point
    if predictor.kind == "serving":
        line = "decision: the server's, at the threshold exported with the model"
    else:
        line = op.describe()
    if op.guard_limit is not None:
        line += (
            f"\nimage guard: images scoring above {op.guard_limit:.4g} are not analysed "
            "(docs/GUARD.md)"
        )
    return line


# --- the command ---------------------------------------------------------------------------------


def parse_args(argv=None):
    p = ArgumentParser(
        prog="python -m keras_app.predict",
        description="Classify chest X-rays with a local model or TF Serving. Each input gets "
        "a row: the decision at the model's operating point (its threshold chosen on "
        "validation), the most probable class, and a status; unreadable inputs are "
        "reported in their row and make the exit status 2.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders or quoted globs (JPEG, PNG, BMP, DICOM)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        help="a run or ensemble folder, a .keras file, or an exported "
        "model saved_models/NAME[/VERSION] (highest version by default)",
    )
    source.add_argument("--server", help="TF Serving REST address, e.g. http://localhost:8501")
    source.add_argument("--grpc", help="TF Serving gRPC address, e.g. localhost:8500")
    p.add_argument("--name", default="pneumonia", help="model name on the server")
    p.add_argument(
        "--version",
        type=int,
        default=None,
        help="model version (server, or exported model folder); default: the latest",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument(
        "--gradcam",
        metavar="DIR",
        default=None,
        help="save Grad-CAM overlays here (needs a run folder or .keras file)",
    )
    p.add_argument(
        "--header-policy",
        metavar="FILE",
        help="JSON: what a DICOM file's header must say to be analysed, as the DICOM node "
        "takes it (default: CR or DX, chest, PA or AP, one grey frame)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per request")
    p.add_argument(
        "--usage-log",
        metavar="PATH",
        default=None,
        help="append one PHI-free JSON line per image to this audit log, for "
        "python -m keras_app.monitor (keras_app/inference/usage_log.py)",
    )
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the server"
    )
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1. Received --batch-size={args.batch_size}")
    if args.gradcam and not args.model:
        raise UsageError(
            "--gradcam needs the Keras model, not a server: pass the run folder with --model"
        )
    return args


def header_policy(path: str | None):
    """What a DICOM file's header must say to be analysed (`--header-policy`, else defaults)."""
    from keras_app.decision.header_policy import HeaderPolicy

    return HeaderPolicy.from_file(path) if path else HeaderPolicy()


def open_model(args):
    """The predictor the flags name; for --gradcam, one with Keras layers."""
    from keras_app.inference.predictor import open_predictor, open_server

    if args.server or args.grpc:
        return open_server(
            args.server, grpc=args.grpc, name=args.name, version=args.version, timeout=args.timeout
        )
    predictor = open_predictor(args.model, args.version)
    if args.gradcam:
        check_gradcam(predictor)
    return predictor


def check_gradcam(predictor) -> None:
    from keras_app.evaluation.gradcam import split_classifier

    if predictor.keras_model is None:
        raise UsageError(
            f"--gradcam needs the Keras model, and {predictor.path} is a SavedModel "
            "(no layers to take gradients through): pass the run folder it was "
            "exported from with --model"
        )
    try:
        split_classifier(predictor.keras_model)
    except ValueError as err:
        raise UsageError(f"--gradcam: {err}") from None


def classify(predictor, inputs, batch_size: int):
    """Scores for the readable inputs (None when there are none)."""
    from keras_app.inference.inputs import read_images

    files = [i.path for i in inputs if i.to_predict]
    if not files:
        return None, []
    contents = read_images(files)
    return predictor.predict_bytes(contents, batch_size), contents


def print_records(args, records: list[dict]) -> None:
    if args.json:
        print(format_json(records))
    elif args.csv:
        print(format_csv(records))
    else:
        print(format_table(records))


def save_gradcam(args, predictor, inputs, contents) -> None:
    from keras_app.evaluation.gradcam import explain_files

    files = [i.path for i in inputs if i.to_predict]
    written = explain_files(predictor, files, contents, args.gradcam)
    for source, overlay in zip(files, written, strict=True):
        print(overlay.line(source), file=sys.stderr)
    print(f"saved {len(written)} Grad-CAM overlay(s) to {args.gradcam}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from keras_app.core.cli import import_tensorflow
    from keras_app.inference.inputs import collect_inputs

    import_tensorflow()

    inputs = collect_inputs(args.inputs, header_policy(args.header_policy))
    predictor = open_model(args)
    start = time.perf_counter()
    scores, contents = classify(predictor, inputs, args.batch_size)
    if args.usage_log and scores is not None:
        from keras_app.inference.usage_log import UsageLog, log_predictions

        files = [i.path for i in inputs if i.ok]
        log = UsageLog(args.usage_log, source="predict")
        log_predictions(log, predictor, files, contents, scores, time.perf_counter() - start)
    print_records(args, rows(inputs, scores))
    if scores is not None:
        print(operating_point_note(predictor), file=sys.stderr)
    if args.gradcam and contents:
        save_gradcam(args, predictor, inputs, contents)
    failed = sum(not i.ok for i in inputs)
    if failed:
        print(f"{failed} of {len(inputs)} input(s) could not be classified", file=sys.stderr)
        return SOME_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
