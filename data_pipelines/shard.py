"""python -m data_pipelines.shard SPEC OUT: write a data source as TFRecord shards.

    python -m data_pipelines.shard ../shared/data/chest_xray_224 /data/chest-shards
    python -m data_pipelines.shard csv:Data_Entry_2017.csv /data/nih-pneumonia --label Pneumonia
    python -m keras_app.train --data tfrecord:/data/chest-shards ...

The source is loaded as `load_dataset` loads it (the same splits for the same
--val-fraction and --seed), every image decoded and resized once, and the
shards keep the splits, labels, patient ids, content hashes and the source's
fingerprint (see `data_pipelines.records`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from data_pipelines.errors import DataError
from data_pipelines.manifest import UNCERTAIN_POLICIES, ManifestOptions
from data_pipelines.record_writer import IMAGES_PER_SHARD, write_shards
from data_pipelines.sources import load_dataset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_pipelines.shard",
        description="Write a data source as TFRecord shards of decoded, resized images "
        "(read back with --data tfrecord:OUT).",
    )
    p.add_argument("spec", metavar="SPEC", help="the data, as --data takes it (a folder, csv:PATH)")
    p.add_argument("out", metavar="OUT", help="the shard folder to create (absent or empty)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="square size the images are resized to (default: the data's typical size)",
    )
    p.add_argument("--pad-to-aspect", action="store_true", help="keep the aspect ratio, pad")
    p.add_argument(
        "--images-per-shard",
        type=int,
        default=IMAGES_PER_SHARD,
        help="records per shard file (default: %(default)s, about 50 MB at 224 px grey)",
    )
    p.add_argument("--val-fraction", type=float, default=0.1, help="as keras_app.train takes it")
    p.add_argument("--seed", type=int, default=42, help="carves the splits, orders the records")
    p.add_argument("--label", default=None, help="a manifest's label column or finding")
    p.add_argument("--path-column", default=None, help="a manifest's column of image paths")
    p.add_argument("--patient-column", default=None, help="a manifest's column of patient ids")
    p.add_argument(
        "--uncertain",
        default="ignore",
        choices=UNCERTAIN_POLICIES,
        help="CheXpert's uncertain (-1.0) labels (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    options = ManifestOptions(args.label, args.path_column, args.patient_column, args.uncertain)
    data = load_dataset(args.spec, val_fraction=args.val_fraction, seed=args.seed, manifest=options)
    print(data.summary(), flush=True)
    size = args.image_size or (max(data.native_size) if data.native_size else None)
    if size is None or size < 1:
        raise DataError(f"--image-size must be a positive number of pixels. Received {size}")
    out = write_shards(
        data,
        args.out,
        image_size=(size, size),
        pad_to_aspect=args.pad_to_aspect,
        images_per_shard=args.images_per_shard,
        carved_with=(args.val_fraction, args.seed),
        source={"spec": args.spec, "manifest": dataclasses.asdict(options)},
        report=lambda line: print(line, flush=True),
    )
    print(f"shards: {out} (train from them with --data tfrecord:{out})")


def cli(argv: Sequence[str] | None = None) -> int:
    """`main`, with a DataError as one line on stderr and exit code 2."""
    try:
        main(argv)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
