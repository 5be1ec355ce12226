"""The training configuration: one frozen dataclass, built from the command line."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from keras_app.core.cli import ArgumentParser
from keras_app.core.errors import UsageError
from keras_app.recipe.backbones import BACKBONES

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
AUGMENTS = ("none", "light", "standard")
# data_pipelines.manifest.UNCERTAIN_POLICIES (not imported: it loads TensorFlow).
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")
# The TrainConfig fields that go to load_dataset as data_pipelines.ManifestOptions.
MANIFEST_FIELDS = ("label", "path_column", "patient_column", "uncertain")
# The largest share of train carved as val: data_pipelines.load_dataset accepts (0, 0.5]
# too (the data layer cannot import this one), and a test holds the two together.
MAX_VAL_FRACTION = 0.5
# The widest refer band (--refer-band): keras_app.decision.operating_point.MAX_REFER_SHARE,
# not imported (recipe sits below decision); a test holds the two together.
MAX_REFER_SHARE = 0.5

# Default end-to-end epochs of a randomly initialised backbone (see `scratch_epochs`).
SCRATCH_EPOCHS = 10
# --- recipe knobs (issue 12, docs/RECIPES.md) ---
FINE_TUNE_BN = ("frozen", "train")
LR_SCHEDULES = ("plateau", "cosine")
# --- a recipe that cannot lean on the borders (issue 27, docs/RECIPES.md) ---
# data_pipelines.outside.OUTSIDE_MODES (not imported: it loads TensorFlow; a test
# holds the two together).
OUTSIDE_LUNGS = ("none", "erase", "swap")
# What --monitor may name, and which way is better: the checkpoint, early stopping and
# the LR schedule all follow this direction.
MONITOR_MODES = {
    "val_auc": "max",
    "val_accuracy": "max",
    "val_sensitivity": "max",
    "val_specificity": "max",
    "val_loss": "min",
}


def flag(
    default,
    help: str,
    *,
    why: str | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
):
    """A `TrainConfig` field that is also a command-line flag.

    Args:
        default: the field's default, and the flag's.
        help: the flag's help text; where the default is None (or needs words), the
            text ends with `(default: ...)` saying what that means.
        why: the reason the default is what it is (nanoGPT's comments, kept with it).
        choices: the values the flag accepts.
        metavar: how `--help` names the value.

    Returns:
        A `dataclasses.field` whose metadata `build_parser` turns into the flag.
    """
    meta = {"help": help, "why": why, "choices": choices, "metavar": metavar}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; written to the run folder as config.json.

    Each field is the flag `--field-name`: its help, choices and the reason for its
    default sit in the field's metadata (see `flag`), and `build_parser` reads them.
    """

    model: str = flag("xception", "backbone", choices=sorted(BACKBONES))
    data: str | None = flag(
        None,
        "FOLDER | csv:PATH | tfrecord:PATH | tfds:NAME[:SPLIT] | npz:PATH | "
        "medmnist:NAME[@SIZE] | digits (default: digits, embedded and offline)",
        why="scikit-learn's digits ship with the package: the default runs offline",
        metavar="SPEC",
    )
    run_dir: str | None = flag(None, "run folder (default: runs/<model>-<time>)")
    image_size: int | None = flag(
        None, "square input size (default: the backbone's, capped at the data's size)"
    )
    alpha: float | None = flag(None, "MobileNet width multiplier (default: the registry's)")
    weights: str = flag(
        "auto",
        "auto: ImageNet when Keras can load it, else random initialisation",
        why="offline machines without the ImageNet files still train",
        metavar="auto|imagenet|none|PATH",
    )
    batch_size: int = flag(32, "images per step (global)")
    head_epochs: int = flag(
        0,
        "phase 1 epochs, backbone frozen (0 skips)",
        why="0: end to end from the first step; with the fine-tune values and knobs below "
        "this beat 5 head + 5 fine-tune epochs at 1e-5 with frozen BatchNorm on chest X-ray "
        "val AUC (docs/RECIPES.md)",
    )
    lr: float = flag(
        1e-3,
        "phase 1 (or end-to-end) learning rate",
        why="Adam's usual 1e-3 for a freshly initialised head on frozen features",
    )
    fine_tune_epochs: int = flag(
        12,
        "phase 2 epochs, top layers unfrozen (0 skips)",
        why="of 3, 5, 8 and 12 end-to-end epochs on the chest X-rays, 12 had the best val AUC "
        "and val log-loss; with the top half unfrozen they train in 5 to 6 min on the slowest "
        "2-core machine this project has had (docs/RECIPES.md)",
    )
    fine_tune_lr: float = flag(
        1e-3,
        "phase 2 learning rate",
        why="Adam's 1e-3 end to end, as the plain script: with BatchNorm training and "
        "cosine decay to 0 it does not wreck the pretrained features (docs/RECIPES.md)",
    )
    unfreeze: str = flag(
        "0.5",
        "backbone layers unfrozen in phase 2, counted from the top: a number of layers, a "
        "fraction of the backbone's layers (0.5: the top half), or all",
        why="the top half reached the val AUC and log-loss of all layers on the chest X-rays "
        "in a third of the time per epoch (docs/RECIPES.md); BatchNorm follows --fine-tune-bn",
        metavar="N|FRACTION|all",
    )
    dropout: float = flag(0.2, "dropout before the softmax")
    augment: str = flag(
        "standard",
        "training augmentation: rotation, shear, flip, brightness, contrast",
        choices=AUGMENTS,
    )
    class_weight: str = flag(
        "auto", "auto: balanced weights from the training counts", choices=("auto", "none")
    )
    monitor: str | None = flag(
        None,
        "metric for the best checkpoint (default: val_auc for 2 classes, else val_accuracy)",
        choices=sorted(MONITOR_MODES),
    )
    target_sensitivity: float | None = flag(
        0.97,
        "the operating point: the threshold reaching this sensitivity on val with the best "
        "specificity; none: decide by the most probable class",
        why="a screening test must not miss disease (see README, 'Operating point')",
        metavar="S",
    )
    patience: int = flag(
        4,
        "EarlyStopping patience",
        why="epochs without improvement before stopping; the LR is cut after half as many",
    )
    precision: str = flag(
        "auto",
        "auto: mixed_float16 on a GPU; on a CPU with bfloat16 (avx512_bf16, amx_bf16) "
        "mixed_bfloat16 for the backbones measured faster in it, else float32",
        why="keras_app.precision holds the measured list; train.md says which and why",
        choices=PRECISIONS,
    )
    jit: str = flag("auto", "XLA; auto: on a GPU only", choices=("auto", "on", "off"))
    strategy: str = flag(
        "auto",
        "auto: mirrored over several GPUs, multiworker when TF_CONFIG is set",
        choices=STRATEGIES,
    )
    val_fraction: float = flag(
        0.1,
        f"share of train carved as val where the source has none (or a tiny one); "
        f"in (0, {MAX_VAL_FRACTION}]",
    )
    seed: int = flag(42, "seed of splits, shuffling, init")
    cache: str = flag(
        "memory",
        "cache decoded images in memory, not at all, or in a file",
        metavar="memory|none|PATH",
    )
    pad_to_aspect: bool = flag(False, "resize keeping aspect, pad")
    steps_per_epoch: int | None = flag(
        None, "cap on training batches per epoch (quick checks) (default: no cap)"
    )
    thermal: bool = flag(True, "the GPU thermal guard, when a GPU is present")
    thermal_limit: float = flag(
        65.0,
        "pause training above this GPU temperature (°C)",
        why="ThermalGuard's own default: the limit users asked for",
    )
    thermal_resume: float | None = flag(
        None, "resume at or below this temperature (default: limit - 5)"
    )
    thermal_max_pause: float = flag(
        900.0,
        "seconds a pause may last before training stops cleanly",
        why="longer than ThermalGuard's library default (600 s): the guard stops an "
        "unattended run when this runs out, and a stopped run waits for a person to "
        "resume it, so the command gives the GPU more time to cool first",
    )
    fine_tune_bn: str = flag(
        "train",
        "BatchNorm of a pretrained backbone in phase 2: frozen (ImageNet statistics) or "
        "train (statistics and scale adapt to the data)",
        why="X-rays are far from ImageNet's statistics; part of the val winner "
        "(docs/RECIPES.md: frozen BatchNorm lost 0.019 val AUC)",
        choices=FINE_TUNE_BN,
    )
    lr_schedule: str = flag(
        "cosine",
        "plateau: halve the lr when the monitor stalls; cosine: linear warm-up, then "
        "cosine decay to 0 over each phase",
        why="a fixed 3-epoch budget needs no plateau detection (docs/RECIPES.md)",
        choices=LR_SCHEDULES,
    )
    scratch_epochs: int | None = flag(
        None,
        "epochs of the one end-to-end phase of a backbone starting from random weights "
        "(simple_cnn, --weights none, or ImageNet weights not to be had) (default: "
        f"{SCRATCH_EPOCHS} with the default epochs, else head + fine-tune epochs)",
        why="a random backbone learns its features from nothing: the transfer recipe's 3 "
        "epochs left make train's Xception on digits at test accuracy 0.95, 10 gave 0.978",
    )
    feature_cache: bool = flag(
        True,
        "train the head phase on backbone features computed once (for "
        "--feature-cache-views augmented passes) instead of running the frozen backbone "
        "every epoch; used when the head phase has more epochs than views",
        why="the frozen backbone's output does not change; measured in docs/BENCHMARKS.md",
    )
    feature_cache_views: int = flag(
        1,
        "augmented passes over train whose features the head phase cycles through",
        why="each view costs one backbone pass, as much as a plain head epoch; one view "
        "reached the plain head phase's val AUC on the chest X-rays (0.9885 vs 0.9886, "
        "docs/BENCHMARKS.md)",
    )
    image_guard: bool = flag(
        True,
        "fit the image guard after training: images unlike the training images (photos, "
        "blank frames, other modalities, rotated films) get 'not analysed' instead of an "
        "answer; its limit lets about 99%% of val through",
        why="a screening model answers whatever it is sent; docs/GUARD.md measured the guard "
        "on out-of-distribution sets (Mahalanobis at three depths, Lee et al. 2018)",
    )
    label_smoothing: float = flag(
        0.0,
        "cross-entropy label smoothing (0: none)",
        why="left off unless docs/RECIPES.md shows it wins on validation; the temperature "
        "fitted after training undoes what it does to calibration",
    )
    # A manifest's task and columns (data_pipelines.ManifestOptions, docs/DATA.md).
    label: str | None = flag(
        None,
        "a manifest's label column, or the finding of a ChestX-ray14 or CheXpert binary "
        "task, e.g. Pneumonia (default: the column named like label, class, target)",
        metavar="NAME",
    )
    path_column: str | None = flag(
        None, "a manifest's column of image paths (default: named like path, file, image)"
    )
    patient_column: str | None = flag(
        None,
        "a manifest's column of patient ids (default: named like patient, subject, mrn; "
        "else patients from file names)",
    )
    uncertain: str = flag(
        "ignore",
        "CheXpert's uncertain (-1.0) labels: leave the rows out, or read them as 0 or 1",
        why="U-Ignore guesses no label (Irvin et al. 2019 compare the three)",
        choices=UNCERTAIN_POLICIES,
    )
    outside_lungs: str = flag(
        "swap",
        "training images: swap what lies outside each film's lung region for another "
        "film's (of either class), or erase it to the lungs' mean, so that it says nothing "
        "about the label; for frontal chest films (skipped, and said, on thumbnails and "
        "where the lung estimate falls back on many training images)",
        why="on the chest X-rays the README model ranked films with their lungs erased at "
        "val AUC 0.94; swapping the outside brought that to 0.40 at val AUC 0.9975 against "
        "0.9978, the lowest of the recipes within 0.003 of the best (docs/RECIPES.md, issue 27)",
        choices=OUTSIDE_LUNGS,
    )
    outside_lungs_p: float = flag(
        1.0,
        "share of training images whose outside is swapped or erased",
        why="every image: where some keep their own outside, the outside still predicts "
        "the label and the network can learn it",
    )
    thorax_crop: bool = flag(
        False,
        "crop the input to a fixed thorax box inside the model (keras_app.model.ThoraxCrop): "
        "the film's outer bands, with their markers, never reach the network",
    )
    refer_band: float | None = flag(
        None,
        "refer this share of val's cases, those nearest the threshold in log-odds, to a "
        "reader: analysed images inside the band [low, high) around the threshold are "
        "answered 'refer' instead of a class; in (0, 0.5] (default: none, every analysed "
        "image decided)",
        why="off unless a site asks for it: docs/GUARD.md measured what 5% and 10% cost and "
        "gave on the chest X-rays",
        metavar="SHARE",
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# argparse's `type` per field annotation (a string under `from __future__ import annotations`).
_TYPES = {"int": int, "float": float, "str": None}


def _add_field_flag(p: ArgumentParser, f: dataclasses.Field) -> None:
    """Adds `--field-name` as the field's metadata describes it."""
    name = "--" + f.name.replace("_", "-")
    meta = f.metadata
    if f.type == "bool":
        # False: a plain switch; True: `--x/--no-x`, so the help states the behaviour.
        action = "store_true" if f.default is False else argparse.BooleanOptionalAction
        p.add_argument(name, action=action, default=f.default, help=meta["help"])
        return
    convert = _TYPES[f.type.removesuffix(" | None")]
    if convert is not None and f.type.endswith(" | None"):
        convert = _or_none(convert)
    p.add_argument(
        name,
        type=convert,
        default=f.default,
        choices=meta["choices"],
        metavar=meta["metavar"],
        help=meta["help"],
    )


def _or_none(convert):
    """A flag type that also takes `none`, for a field whose None means something."""

    def parse(text: str):
        return None if text.strip().lower() == "none" else convert(text)

    parse.__name__ = convert.__name__  # argparse names the type in its errors
    return parse


def build_parser(prog: str = "python -m keras_app.train") -> ArgumentParser:
    """The `python -m keras_app.train` parser: one flag per `TrainConfig` field.

    Args:
        prog: the command named in its error lines (a command that passes its other
            flags on to training names itself).
    """
    p = ArgumentParser(
        prog=prog,
        description="Fine-tune a Keras Applications backbone and write a run folder.",
    )
    for f in dataclasses.fields(TrainConfig):
        _add_field_flag(p, f)
    return p


def parse_config(argv=None, prog: str = "python -m keras_app.train") -> TrainConfig:
    """Parses and checks the command line; a UsageError names any bad value."""
    args = build_parser(prog).parse_args(argv)
    config = TrainConfig(**vars(args))
    validate(config)
    return config


def validate(c: TrainConfig) -> None:
    spec = BACKBONES[c.model]
    if c.image_size is not None and c.image_size < spec.min_size:
        raise UsageError(
            f"--image-size {c.image_size} is below {c.model}'s minimum of {spec.min_size} px"
        )
    for flag, value in (("--batch-size", c.batch_size),):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1. Received {value}")
    for flag, value in (
        ("--head-epochs", c.head_epochs),
        ("--fine-tune-epochs", c.fine_tune_epochs),
        ("--patience", c.patience),
    ):
        if value < 0:
            raise UsageError(f"{flag} must be >= 0. Received {value}")
    if c.scratch_epochs is not None and c.scratch_epochs < 1:
        raise UsageError(f"--scratch-epochs must be at least 1. Received {c.scratch_epochs}")
    if c.head_epochs + c.fine_tune_epochs == 0:
        raise UsageError("--head-epochs and --fine-tune-epochs are both 0: nothing to train")
    for flag, value in (("--lr", c.lr), ("--fine-tune-lr", c.fine_tune_lr)):
        if value <= 0:
            raise UsageError(f"{flag} must be > 0. Received {value}")
    if c.target_sensitivity is not None and not 0 < c.target_sensitivity <= 1:
        raise UsageError(f"--target-sensitivity must be in (0, 1]. Received {c.target_sensitivity}")
    check_refer_band(c.refer_band)
    if not 0 < c.val_fraction <= MAX_VAL_FRACTION:
        raise UsageError(
            f"--val-fraction must be in (0, {MAX_VAL_FRACTION}]. Received {c.val_fraction}"
        )
    if not 0 <= c.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1). Received {c.dropout}")
    if not 0 <= c.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1). Received {c.label_smoothing}")
    if not 0 < c.outside_lungs_p <= 1:
        raise UsageError(f"--outside-lungs-p must be in (0, 1]. Received {c.outside_lungs_p}")
    parse_unfreeze(c.unfreeze)
    if c.alpha is not None and spec.default_alpha is None:
        raise UsageError(f"--alpha applies to the MobileNets only, not {c.model}")
    if c.model == "simple_cnn" and c.weights == "imagenet":
        raise UsageError("simple_cnn has no ImageNet weights: use --weights none (or auto)")
    if c.feature_cache_views < 1:
        raise UsageError(
            f"--feature-cache-views must be at least 1. Received {c.feature_cache_views}"
        )
    if c.steps_per_epoch is not None and c.steps_per_epoch < 1:
        raise UsageError(f"--steps-per-epoch must be at least 1. Received {c.steps_per_epoch}")
    resume = c.thermal_resume if c.thermal_resume is not None else c.thermal_limit - 5
    if resume >= c.thermal_limit:
        raise UsageError(
            "--thermal-resume must be below --thermal-limit. "
            f"Received {resume} >= {c.thermal_limit}"
        )
    if c.thermal_max_pause <= 0:
        raise UsageError(f"--thermal-max-pause must be > 0. Received {c.thermal_max_pause}")


def manifest_options(fields: dict):
    """`data_pipelines.ManifestOptions` from the MANIFEST_FIELDS of a config dict (a run's
    config.json, or `TrainConfig.to_dict()`); absent or None ones take the defaults."""
    import data_pipelines

    return data_pipelines.ManifestOptions(
        **{k: fields[k] for k in MANIFEST_FIELDS if fields.get(k) is not None}
    )


def check_refer_band(share: float | None) -> None:
    """--refer-band (train, ensemble): None (no band), or a share in (0, MAX_REFER_SHARE].

    Raises:
        UsageError: any other share.
    """
    if share is not None and not 0 < share <= MAX_REFER_SHARE:
        raise UsageError(f"--refer-band must be in (0, {MAX_REFER_SHARE}]. Received {share}")


def add_manifest_flags(parser, default: str) -> None:
    """--label, --path-column, --patient-column and --uncertain for a command that reads a
    manifest (`--data csv:...`) besides training; `default` says what each falls back to."""
    for name in MANIFEST_FIELDS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            choices=UNCERTAIN_POLICIES if name == "uncertain" else None,
            help=f"for a manifest (--data csv:...): its {name.replace('_', ' ')}, as "
            f"keras_app.train takes it (default: {default})",
        )


def parse_unfreeze(text: str) -> int | float | str:
    """`--unfreeze`: "all", a positive number of layers (int), or a fraction of the
    backbone's layers in (0, 1) (float), as `model.set_backbone_trainable` takes it.

    Raises:
        UsageError: anything else.
    """
    if text == "all":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        fraction = float(text)
    except ValueError:
        fraction = None
    if fraction is None or not 0 < fraction < 1:
        raise UsageError(
            "--unfreeze takes a positive number of layers, a fraction of them in (0, 1), or "
            f"'all'. Received {text!r}"
        )
    return fraction
