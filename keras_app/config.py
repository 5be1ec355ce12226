"""The training configuration: one frozen dataclass, built from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from keras_app.backbones import BACKBONES
from keras_app.errors import ArgumentParser, UsageError

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
AUGMENTS = ("none", "light", "standard")
# --- recipe knobs (issue 12, docs/RECIPES.md) ---
FINE_TUNE_BN = ("frozen", "train")
LR_SCHEDULES = ("plateau", "cosine")
# What --monitor may name, and which way is better: the checkpoint, early stopping and
# the LR schedule all follow this direction.
MONITOR_MODES = {
    "val_auc": "max",
    "val_accuracy": "max",
    "val_sensitivity": "max",
    "val_specificity": "max",
    "val_loss": "min",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; written to the run folder as config.json."""

    model: str = "xception"
    data: str | None = None  # None: the embedded offline default, scikit-learn's digits
    run_dir: str | None = None
    image_size: int | None = None  # None: the backbone's default, capped at the data's own size
    alpha: float | None = None
    weights: str = "auto"
    batch_size: int = 32
    # 0: end to end from the first step. This recipe (with the fine-tune values and
    # knobs below) beat the old 5 head + 5 fine-tune epochs at 1e-5 with frozen
    # BatchNorm on chest X-ray val AUC (docs/RECIPES.md, issue 12).
    head_epochs: int = 0
    # Adam's usual 1e-3 for a freshly initialised head on frozen features.
    lr: float = 1e-3
    # 3 end-to-end epochs: val AUC 0.998 and within the 10-minute budget on 2 cores
    # (docs/RECIPES.md); the plain Keras script of issue 12 trains as long.
    fine_tune_epochs: int = 3
    # Adam's 1e-3 end to end, as the plain script: with BatchNorm training and cosine
    # decay to 0 it does not wreck the pretrained features (docs/RECIPES.md).
    fine_tune_lr: float = 1e-3
    # "all", as the Keras guide does; BatchNorm follows --fine-tune-bn.
    unfreeze: str = "all"
    dropout: float = 0.2
    augment: str = "standard"
    class_weight: str = "auto"
    monitor: str | None = None  # None: val AUC for two classes, val accuracy otherwise
    # A screening test must not miss disease: the operating point is the highest threshold
    # whose validation sensitivity reaches this (see README, "Operating point").
    target_sensitivity: float | None = 0.97
    # Epochs without improvement before stopping; LR is cut after half as many.
    patience: int = 4
    precision: str = "auto"
    jit: str = "auto"
    strategy: str = "auto"
    val_fraction: float = 0.1
    seed: int = 42
    cache: str = "memory"
    pad_to_aspect: bool = False
    steps_per_epoch: int | None = None
    thermal: bool = True
    thermal_limit: float = 65.0
    thermal_resume: float | None = None
    thermal_max_pause: float = 900.0
    # --- recipe knobs (issue 12, docs/RECIPES.md) ---
    # "train": BatchNorm statistics and scales adapt to the data (X-rays are far from
    # ImageNet's statistics); "frozen" keeps ImageNet's. Part of the val winner.
    fine_tune_bn: str = "train"
    # "cosine": 5% linear warm-up, then cosine decay to 0 over the phase; a fixed
    # 3-epoch budget needs no plateau detection. "plateau": halve when the monitor stalls.
    lr_schedule: str = "cosine"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_parser() -> ArgumentParser:
    d = TrainConfig()
    p = ArgumentParser(
        prog="python -m keras_app.train",
        description="Fine-tune a Keras Applications backbone and write a run folder.",
    )
    p.add_argument("--model", default=d.model, choices=sorted(BACKBONES), help="backbone")
    p.add_argument(
        "--data",
        default=d.data,
        metavar="SPEC",
        help="FOLDER | tfds:NAME[:SPLIT] | npz:PATH | medmnist:NAME[@SIZE] | digits "
        "(default: digits, embedded and offline)",
    )
    p.add_argument("--run-dir", default=d.run_dir, help="run folder (default: runs/<model>-<time>)")
    p.add_argument(
        "--image-size",
        type=int,
        default=d.image_size,
        help="square input size (default: the backbone's, capped at the data's size)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=d.alpha,
        help="MobileNet width multiplier (default: the registry's)",
    )
    p.add_argument(
        "--weights",
        default=d.weights,
        metavar="auto|imagenet|none|PATH",
        help="auto: ImageNet when Keras can load it, else random initialisation",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step (global)")
    p.add_argument(
        "--head-epochs",
        type=int,
        default=d.head_epochs,
        help="phase 1 epochs, backbone frozen (0 skips)",
    )
    p.add_argument("--lr", type=float, default=d.lr, help="phase 1 (or end-to-end) learning rate")
    p.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=d.fine_tune_epochs,
        help="phase 2 epochs, top layers unfrozen (0 skips)",
    )
    p.add_argument(
        "--fine-tune-lr", type=float, default=d.fine_tune_lr, help="phase 2 learning rate"
    )
    p.add_argument(
        "--unfreeze",
        default=d.unfreeze,
        metavar="N|all",
        help="backbone layers unfrozen in phase 2, counted from the top",
    )
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout before the softmax")
    p.add_argument(
        "--augment",
        default=d.augment,
        choices=AUGMENTS,
        help="training augmentation: rotation, shear, flip, brightness, contrast",
    )
    p.add_argument(
        "--class-weight",
        default=d.class_weight,
        choices=("auto", "none"),
        help="auto: balanced weights from the training counts",
    )
    p.add_argument(
        "--monitor",
        default=d.monitor,
        choices=sorted(MONITOR_MODES),
        help="metric for the best checkpoint (default: val_auc for 2 classes, else val_accuracy)",
    )
    p.add_argument(
        "--target-sensitivity",
        type=float,
        default=d.target_sensitivity,
        metavar="S",
        help="the operating point: the highest threshold reaching this sensitivity on val",
    )
    p.add_argument("--patience", type=int, default=d.patience, help="EarlyStopping patience")
    p.add_argument(
        "--precision",
        default=d.precision,
        choices=PRECISIONS,
        help="auto: mixed_float16 on a GPU, float32 on a CPU",
    )
    p.add_argument(
        "--jit", default=d.jit, choices=("auto", "on", "off"), help="XLA; auto: on a GPU only"
    )
    p.add_argument(
        "--strategy",
        default=d.strategy,
        choices=STRATEGIES,
        help="auto: mirrored over several GPUs, multiworker when TF_CONFIG is set",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of train carved as val where the source has none (or a tiny one)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of splits, shuffling, init")
    p.add_argument(
        "--cache",
        default=d.cache,
        metavar="memory|none|PATH",
        help="cache decoded images in memory, not at all, or in a file",
    )
    p.add_argument("--pad-to-aspect", action="store_true", help="resize keeping aspect, pad")
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        default=d.steps_per_epoch,
        help="cap on training batches per epoch (quick checks)",
    )
    p.add_argument(
        "--no-thermal",
        dest="thermal",
        action="store_false",
        help="disable the GPU thermal guard (on by default when a GPU is present)",
    )
    p.add_argument(
        "--thermal-limit",
        type=float,
        default=d.thermal_limit,
        help="pause training above this GPU temperature (°C)",
    )
    p.add_argument(
        "--thermal-resume",
        type=float,
        default=d.thermal_resume,
        help="resume at or below this temperature (default: limit - 5)",
    )
    p.add_argument(
        "--thermal-max-pause",
        type=float,
        default=d.thermal_max_pause,
        help="seconds a pause may last before training stops cleanly",
    )
    add_recipe_flags(p, d)
    return p


def add_recipe_flags(p: ArgumentParser, d: TrainConfig) -> None:
    """The recipe knobs of issue 12: BatchNorm while fine-tuning, the lr schedule."""
    p.add_argument(
        "--fine-tune-bn",
        default=d.fine_tune_bn,
        choices=FINE_TUNE_BN,
        help="BatchNorm of a pretrained backbone in phase 2: frozen (ImageNet statistics) "
        "or train (statistics and scale adapt to the data)",
    )
    p.add_argument(
        "--lr-schedule",
        default=d.lr_schedule,
        choices=LR_SCHEDULES,
        help="plateau: halve the lr when the monitor stalls; cosine: linear warm-up, "
        "then cosine decay to 0 over each phase",
    )


def parse_config(argv=None) -> TrainConfig:
    """Parses and checks the command line; a UsageError names any bad value."""
    args = build_parser().parse_args(argv)
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
    if c.head_epochs + c.fine_tune_epochs == 0:
        raise UsageError("--head-epochs and --fine-tune-epochs are both 0: nothing to train")
    for flag, value in (("--lr", c.lr), ("--fine-tune-lr", c.fine_tune_lr)):
        if value <= 0:
            raise UsageError(f"{flag} must be > 0. Received {value}")
    if c.target_sensitivity is not None and not 0 < c.target_sensitivity <= 1:
        raise UsageError(f"--target-sensitivity must be in (0, 1]. Received {c.target_sensitivity}")
    if not 0 < c.val_fraction < 0.5:
        raise UsageError(f"--val-fraction must be in (0, 0.5). Received {c.val_fraction}")
    if not 0 <= c.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1). Received {c.dropout}")
    if c.unfreeze != "all" and not (c.unfreeze.isdigit() and int(c.unfreeze) > 0):
        raise UsageError(
            f"--unfreeze takes a positive number of layers or 'all'. Received {c.unfreeze!r}"
        )
    if c.alpha is not None and spec.default_alpha is None:
        raise UsageError(f"--alpha applies to the MobileNets only, not {c.model}")
    if c.model == "simple_cnn" and c.weights == "imagenet":
        raise UsageError("simple_cnn has no ImageNet weights: use --weights none (or auto)")
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


def add_models_flag(p: ArgumentParser) -> None:
    """`--models M1,M2,...`: the flag of the commands that train several backbones."""
    p.add_argument(
        "--models",
        required=True,
        metavar="M1,M2,...",
        help=f"comma-separated backbones, from: {', '.join(sorted(BACKBONES))}",
    )


def check_models(models: tuple[str, ...]) -> None:
    """Raises `UsageError` when `--models` names none or an unknown backbone."""
    if not models:
        raise UsageError("--models needs at least one backbone. Received none")
    unknown = [m for m in models if m not in BACKBONES]
    if unknown:
        raise UsageError(
            f"--models has unknown backbones {unknown}; known: {', '.join(sorted(BACKBONES))}"
        )
