"""What a run tells a person: curves.png and the train.md lab-notebook page."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from keras_app.recipe.config import MONITOR_MODES  # noqa: E402


def plot_curves(
    history: list[dict], monitor: str, path: Path, best_epoch: int | None = None
) -> plt.Figure:
    """Loss and the monitored metric per epoch, train and val, with the phase boundary.

    Args:
        history: `RunFolder.history()`: one dict per epoch, "epoch" counted from 1
            as Keras' log prints it.
        monitor: the metric that chose the best checkpoint (e.g. "val_auc").
        path: where to write the PNG.
        best_epoch: the 1-based epoch to mark; None: the best `monitor` value in `history`.

    Returns:
        The figure, closed (its artists stay readable for tests).
    """
    epochs = [int(h["epoch"]) for h in history]
    metric = monitor.removeprefix("val_")
    if best_epoch is None:
        best_epoch = _best_epoch(history, monitor)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], metric, metric)):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                ax.plot(
                    epochs, values, style, ms=3, label=f"{'val' if prefix else 'train'} {label}"
                )
        phases = [h["phase"] for h in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(epochs[i] - 0.5, color="grey", ls="--", lw=1)
                ax.text(epochs[i] - 0.4, ax.get_ylim()[1], f" {phases[i]}", va="top", fontsize=8)
        _mark_best(ax, history, best_epoch, monitor if key == metric else "val_loss")
        # Epochs are whole: Matplotlib's default locator draws 0.5 steps on short runs.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


BEST_LABEL = "best epoch"


def _best_epoch(history: list[dict], monitor: str) -> int | None:
    """The 1-based epoch of the best `monitor` value, as train.best_epoch picks it."""
    scored = [(h[monitor], int(h["epoch"])) for h in history if h.get(monitor) is not None]
    if not scored:
        return None
    pick = max if MONITOR_MODES.get(monitor, "max") == "max" else min
    return pick(scored)[1]


def _mark_best(ax, history: list[dict], best_epoch: int | None, key: str) -> None:
    """A vertical line and a star on `key`'s curve at the best epoch, labelled with its number."""
    if best_epoch is None:
        return
    ax.axvline(best_epoch, color="tab:green", lw=1, alpha=0.6)
    row = next((h for h in history if int(h["epoch"]) == best_epoch), {})
    if row.get(key) is not None:
        ax.plot([best_epoch], [row[key]], "*", color="tab:green", ms=14, zorder=5)
    ax.annotate(
        f"{BEST_LABEL} {best_epoch}",
        xy=(best_epoch, 0.02),
        xycoords=("data", "axes fraction"),
        xytext=(4, 0),
        textcoords="offset points",
        color="tab:green",
        fontsize=9,
    )


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def train_markdown(
    *,
    config: dict,
    env: dict,
    data: dict,
    phases: list[dict],
    history: list[dict],
    metrics: dict,
    thermal: list[str],
) -> str:
    """The lab-notebook page: hardware, data, phases, timing, best epoch, final metrics."""
    best = metrics.get("best_epoch")
    test = metrics.get("test", {})
    lines = [
        f"# {config['model']} on {data['name']}",
        "",
        "## Hardware",
        f"- {env['platform']}, {env['cpu_count']} CPU cores, "
        f"GPUs: {', '.join(g['name'] for g in env['gpus']) or 'none'}",
        f"- precision {env['precision']}"
        + (f" ({env['precision_reason']})" if env.get("precision_reason") else "")
        + f", XLA {'on' if env['jit_compile'] else 'off'}"
        + ("" if env.get("onednn") is None else f", oneDNN {'on' if env['onednn'] else 'off'}")
        + ", "
        f"strategy {env['strategy']} ({env['replicas']} replica(s))",
        f"- TensorFlow {env['packages']['tensorflow']}, Keras {env['packages']['keras']}",
        "",
        "## Data",
        f"- source `{data['spec']}`, fingerprint `{data['fingerprint']}`, "
        f"classes: {', '.join(data['class_names'])}",
        f"- image size {config['image_size']} px, {_batch(config['batch_size'], env)}, "
        f"augment {config['augment']}, class weights {data.get('class_weight') or 'none'}",
        *(
            f"- {split}: {sum(c.values())} images ({', '.join(f'{k} {v}' for k, v in c.items())})"
            for split, c in data["splits"].items()
        ),
        *(
            [f"- {data['skipped']} unreadable file(s) skipped (listed in environment.json)"]
            if data.get("skipped")
            else []
        ),
        "",
        "## Training",
        f"- weights: {env['weights']}"
        + (" (random initialisation, trained end to end)" if env["weights"] == "none" else "")
        + f", requested `{env['weights_requested']}`",
    ]
    for p in phases:
        secs = [
            h["epoch_seconds"] for h in history if h["phase"] == p["name"] and "epoch_seconds" in h
        ]
        per_epoch = f"{sum(secs) / len(secs):.1f} s/epoch" if secs else "resumed"
        lines.append(
            f"- {p['name']}: {p['epochs_run']} epoch(s), lr {p['lr']}, "
            f"{p['trainable_params']:,} trainable parameters, {per_epoch}"
        )
    lines += [
        # metrics.json's best_epoch counts from 1, as Keras' log and curves.png do.
        f"- best epoch: {best if best is not None else 'n/a'} by `{metrics['monitor']}` "
        f"= {_fmt(metrics.get('best_value'))}",
        *(f"- thermal guard: {t}" for t in thermal),
        "",
        "## Test split",
        "| metric | value |",
        "|---|---|",
        *(
            f"| {k} | {_fmt(test[k])} |"
            for k in (
                "accuracy",
                "roc_auc",
                "pr_auc",
                "sensitivity",
                "specificity",
                "f1",
                "macro_f1",
                "log_loss",
                "ece",
            )
            if k in test
        ),
        "",
        "## Files",
        "- `best.keras` (loads with `keras.models.load_model(path, safe_mode=True)` after "
        "`import keras_app.model`), `metrics.json`, `history.json`, `training.csv`, "
        "`curves.png`",
        "- TensorBoard: `tensorboard --logdir logs`",
        "",
    ]
    return "\n".join(lines)


def _batch(batch_size: int, env: dict) -> str:
    """The global batch, and each replica's share when several replicas train."""
    replicas = env.get("replicas", 1)
    if replicas <= 1:
        return f"batch {batch_size}"
    # The loss is averaged over the global batch, so each phase's lr is for that batch.
    return (
        f"global batch {batch_size} ({batch_size / replicas:g} per replica x {replicas}; "
        "the learning rates below are for the global batch)"
    )
