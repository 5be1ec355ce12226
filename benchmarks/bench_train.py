"""Train-step images/s: the product's own model against PyTorch's same architecture.

Keras: `keras_app.model.classifier.build_classifier(name, 2, size, weights=None,
frozen_bn=False)` with every layer trainable, compiled as `keras_app.train`
compiles it (`keras_app.model.fused_ops.FusedAdam`, categorical cross-entropy, the
product's training metrics, no XLA on a CPU), one `train_on_batch` per timed
step. The product trains BatchNorm and Adam with TensorFlow's fused kernels;
"float32_stock" is the same model with Keras' own BatchNormalization and Adam,
timed beside it to show what the fused kernels give. Torch: torchvision's
ResNet50, DenseNet121, MobileNetV3Large, and timm's `legacy_xception` (the
Keras Xception's architecture, ported) for Xception; `model.train()`, Adam,
cross-entropy, one forward/backward/step per timed step.

Each framework is timed at each of its settings, and the best one counts:

    keras   float32, mixed_bfloat16 (and which one `--precision auto` picks here);
            float32_stock (Keras' own BatchNorm and Adam) for reference
    torch   float32 NCHW, float32 channels_last, bf16 autocast channels_last

Same random batch (images, one-hot labels) for all, same batch and image size.
All contenders are built first, then timed in --rounds interleaved rounds
(model by model, setting by setting), so a load change on a shared machine
hits every contender alike; each round times --steps batches after --warmup.
A batch's images/s is batch / its seconds; the table gives the median batch of
all rounds.

FLOP/s: the train step's FLOPs per image are counted once with torch's
FlopCounterMode (forward + backward convolutions and matmuls of the torch model;
the Keras model of the same architecture does the same arithmetic, MobileNetV3
aside: Keras' variant differs in small details). The peak is a 4096x4096 matmul
in float32 and bfloat16, in both frameworks, timed in the same run.

    python benchmarks/bench_train.py                        # 96 px, batch 16: minutes
    python benchmarks/bench_train.py --image-size 224 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("resnet50", "densenet121", "mobilenetv3large", "xception")
TORCH_NAMES = {
    "resnet50": "torchvision:resnet50",
    "densenet121": "torchvision:densenet121",
    "mobilenetv3large": "torchvision:mobilenet_v3_large",
    "xception": "timm:legacy_xception",
}
KERAS_SETTINGS = ("float32", "mixed_bfloat16", "float32_stock")
STOCK = "_stock"
TORCH_SETTINGS = ("fp32_nchw", "fp32_channels_last", "bf16_channels_last")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated backbones")
    p.add_argument("--image-size", type=int, default=96, help="square input (224: the real one)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed batches per contender and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches per round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    p.add_argument(
        "--force-bf16", action="store_true", help="time the bf16 settings on a CPU without bf16"
    )
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument(
        "--profile", type=Path, help="write a TensorBoard profiler trace of Keras steps here"
    )
    args = p.parse_args(argv)
    args.models = tuple(m for m in args.models.split(",") if m)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"--models takes {', '.join(MODELS)}. Received {unknown}")
    return args


# --- contenders ----------------------------------------------------------------------------


def keras_step(name: str, setting: str, size: int, batch: int):
    """The product's compiled train step on one fixed batch, under `setting`: a dtype
    policy, with the suffix STOCK for Keras' own BatchNormalization and Adam."""
    import keras
    import numpy as np

    from keras_app.model.classifier import build_classifier, set_backbone_trainable
    from keras_app.model.fused_ops import FusedAdam
    from keras_app.model.keras_metrics import training_metrics

    stock = setting.endswith(STOCK)
    keras.mixed_precision.set_global_policy(setting.removesuffix(STOCK))
    try:
        model = build_classifier(
            name, 2, (size, size), weights=None, frozen_bn=False, fused_bn=not stock
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    set_backbone_trainable(model, "all", train_bn=True)
    model.compile(
        optimizer=(keras.optimizers.Adam if stock else FusedAdam)(1e-4),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=training_metrics(2, 1),
        jit_compile=False,
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, batch)]
    return lambda: model.train_on_batch(x, y), model


def torch_model(name: str):
    kind, arch = TORCH_NAMES[name].split(":")
    if kind == "timm":
        import timm

        return timm.create_model(arch, num_classes=2)
    import torchvision

    return getattr(torchvision.models, arch)(num_classes=2)


def torch_step(name: str, setting: str, size: int, batch: int):
    """torch's train step of the same architecture on one fixed batch, at `setting`."""
    import contextlib

    import torch

    model = torch_model(name).train()
    x = torch.rand(batch, 3, size, size) * 255
    y = torch.randint(0, 2, (batch,))
    if "channels_last" in setting:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    bf16 = setting.startswith("bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return step


def train_flops(name: str, size: int) -> float:
    """Train-step FLOPs per image: 3x the torch model's forward convolutions and matmuls.

    The backward pass costs twice the forward (gradients of inputs and of weights).
    Counted on the forward only: FlopCounterMode's backward count of grouped
    (depthwise) convolutions came out ~9x too high for MobileNetV3 and Xception.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = torch_model(name).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, size, size))
    return 3 * counter.get_total_flops()


# --- timing ---------------------------------------------------------------------------------


def time_steps(step, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def matmul_peaks(bf16: bool, n: int = 4096, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of an n x n matmul: float32 and bfloat16 in torch, float32 in TensorFlow.

    TensorFlow's own bfloat16 matmul on a CPU is not oneDNN's (it ran for minutes
    here), so the bf16 peak is torch's.
    """
    import tensorflow as tf
    import torch

    out = {}
    for dtype in ("float32", "bfloat16") if bf16 else ("float32",):
        a = torch.rand(n, n).to(getattr(torch, dtype))
        times = time_steps(lambda a=a: a @ a, repeats, 1)
        out[f"torch_{dtype}"] = 2 * n**3 / min(times) / 1e9
    t = tf.random.uniform((n, n))
    times = time_steps(lambda: tf.linalg.matmul(t, t).numpy(), repeats, 1)
    out["tf_float32"] = 2 * n**3 / min(times) / 1e9
    return out


def build_contenders(args) -> dict:
    from keras_app.training.precision import BF16_FLAGS, choose_precision, cpu_flags

    contenders = {}
    # Without avx512_bf16/amx_bf16 bfloat16 is emulated (TensorFlow's bf16 matmul ran
    # for minutes here): not a contender for "best setting on this CPU".
    bf16 = bool(BF16_FLAGS & cpu_flags()) or args.force_bf16
    keras_settings = [s for s in KERAS_SETTINGS if bf16 or "bfloat16" not in s]
    torch_settings = [s for s in TORCH_SETTINGS if bf16 or not s.startswith("bf16")]
    for name in args.models:
        for setting in keras_settings:
            step, _ = keras_step(name, setting, args.image_size, args.batch_size)
            contenders[(name, "keras", setting)] = step
        for setting in torch_settings:
            contenders[(name, "torch", setting)] = torch_step(
                name, setting, args.image_size, args.batch_size
            )
        auto = choose_precision(name, 0, cpu_flags())[0]
        contenders[(name, "auto")] = auto
        print(f"built {name} (keras --precision auto here: {auto})", flush=True)
    contenders["bf16"] = bf16
    return contenders


def run(args) -> dict:
    import tensorflow as tf
    import torch

    torch.set_num_threads(os.cpu_count())
    contenders = build_contenders(args)
    times = {k: [] for k, v in contenders.items() if callable(v)}
    peaks = []
    for r in range(args.rounds):
        peaks.append(matmul_peaks(contenders["bf16"]))
        print(f"round {r + 1}: matmul GFLOP/s {peaks[-1]}", flush=True)
        for key in times:
            times[key] += time_steps(contenders[key], args.steps, args.warmup)
            rate = args.batch_size / statistics.median(times[key][-args.steps :])
            print(f"round {r + 1}: {' '.join(key)} {rate:.1f} img/s", flush=True)
        print(f"round {r + 1}: load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.profile:
        profile_keras(args, contenders)
    rates = {" ".join(k): args.batch_size / statistics.median(v) for k, v in times.items()}
    flops = {m: train_flops(m, args.image_size) for m in args.models}
    auto = {m: contenders[(m, "auto")] for m in args.models}
    peak = {k: max(p[k] for p in peaks) for k in peaks[0]}
    return {
        "args": {k: str(v) for k, v in vars(args).items()},
        "versions": {"tensorflow": tf.__version__, "torch": torch.__version__},
        "rates": rates,
        "flops_per_image": flops,
        "keras_auto": auto,
        "matmul_gflops": peak,
    }


def profile_keras(args, contenders) -> None:
    """A TensorBoard profiler trace of 3 Keras steps per model, and its top ops printed."""
    import tensorflow as tf

    for name in args.models:
        step = contenders[(name, "keras", contenders[(name, "auto")])]
        tf.profiler.experimental.start(str(args.profile / name))
        time_steps(step, 3, 0)
        tf.profiler.experimental.stop()
        print(f"profile {name}: " + top_ops(args.profile / name), flush=True)


def top_ops(log_dir: Path, n: int = 8) -> str:
    """The ops with the most time in a trace's host plane (summed over threads)."""
    from collections import Counter

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = Counter()
    for path in log_dir.rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace.FromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                if "python" in line.name.lower():
                    continue
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    totals[name.split(":")[-1]] += event.duration_ps / 1e9
    whole = sum(totals.values()) or 1.0
    return ", ".join(f"{k} {v:.0f} ms ({100 * v / whole:.0f}%)" for k, v in totals.most_common(n))


# --- report ---------------------------------------------------------------------------------


def table(result: dict) -> str:
    rates, peak = result["rates"], result["matmul_gflops"]
    peak32 = max(peak["torch_float32"], peak["tf_float32"])
    peak16 = peak.get("torch_bfloat16")
    cols = [("keras", s) for s in KERAS_SETTINGS] + [("torch", s) for s in TORCH_SETTINGS]
    cols = [c for c in cols if any(f"{m} {c[0]} {c[1]}" in rates for m in result["keras_auto"])]
    lines = [
        "| backbone | "
        + " | ".join(f"{f} {s}" for f, s in cols)
        + " | keras auto | keras auto / torch best | fused / stock (float32) "
        "| keras GFLOP/s (% of peak) | torch best GFLOP/s (% of peak) |",
        "|---|" + "---:|" * (len(cols) + 5),
    ]
    for m, auto in result["keras_auto"].items():
        t = {s: rates[f"{m} torch {s}"] for f, s in cols if f == "torch"}
        best_t = max(t, key=t.get)
        k = rates.get(f"{m} keras {auto}", float("nan"))
        f = result["flops_per_image"][m] / 1e9
        kp = peak16 if auto == "mixed_bfloat16" else peak32
        tp = peak16 if best_t.startswith("bf16") else peak32
        fused_gain = rates[f"{m} keras float32"] / rates[f"{m} keras float32{STOCK}"]
        lines.append(
            f"| {m} | "
            + " | ".join(f"{rates[f'{m} {fw} {s}']:.1f}" for fw, s in cols)
            + f" | {auto} | {k / t[best_t]:.2f}x ({best_t}) | {fused_gain:.2f}x "
            f"| {k * f:.0f} ({100 * k * f / kp:.0f}%) "
            f"| {t[best_t] * f:.0f} ({100 * t[best_t] * f / tp:.0f}%) |"
        )
    lines.append("")
    lines.append(
        "matmul 4096^2 GFLOP/s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
        + "; train GFLOPs/image: "
        + ", ".join(f"{m} {v / 1e9:.2f}" for m, v in result["flops_per_image"].items())
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    # torch's stack first: torchvision imports triton, which segfaults when it
    # loads after TensorFlow's CUDA libraries (torch 2.14.1, TF 2.21.0).
    import timm  # noqa: F401
    import torchvision  # noqa: F401

    from keras_app.core.cli import import_tensorflow

    import_tensorflow()
    result = run(args)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
