"""keras_app.report: curves.png with whole, 1-based epochs and the best one marked; train.md."""

from __future__ import annotations

from keras_app.training import report


def history(n: int = 5) -> list[dict]:
    """`RunFolder.history()` rows: epochs from 1, a head and a fine-tune phase."""
    auc = [0.60, 0.70, 0.90, 0.80, 0.85][:n]
    return [
        {
            "epoch": i + 1,
            "phase": "head" if i < 2 else "finetune",
            "loss": 1.0 - 0.1 * i,
            "val_loss": 1.1 - 0.1 * i,
            "auc": auc[i],
            "val_auc": auc[i],
        }
        for i in range(n)
    ]


def test_curves_have_whole_epochs_from_one_and_mark_the_best(tmp_path):
    fig = report.plot_curves(history(), "val_auc", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").is_file()
    loss_ax, auc_ax = fig.axes[:2]
    for ax in (loss_ax, auc_ax):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert min(line.get_xdata()[0] for line in ax.get_lines() if len(line.get_xdata()) > 1) == 1
    labels = [t.get_text() for t in auc_ax.texts]
    assert "best epoch 3" in labels  # val_auc peaks at the third epoch
    stars = [line for line in auc_ax.get_lines() if line.get_marker() == "*"]
    assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([3], [0.90])]


def test_an_explicit_best_epoch_and_a_loss_monitor(tmp_path):
    fig = report.plot_curves(history(), "val_loss", tmp_path / "c.png")
    assert "best epoch 5" in [t.get_text() for t in fig.axes[0].texts]  # lowest val_loss
    fig = report.plot_curves(history(), "val_auc", tmp_path / "c.png", best_epoch=2)
    assert "best epoch 2" in [t.get_text() for t in fig.axes[1].texts]


def test_train_markdown_prints_the_one_based_best_epoch_as_recorded():
    env = {
        "platform": "linux",
        "cpu_count": 2,
        "gpus": [],
        "precision": "float32",
        "jit_compile": False,
        "strategy": "none",
        "replicas": 1,
        "packages": {"tensorflow": "2", "keras": "3"},
        "weights": "none",
        "weights_requested": "none",
    }
    data = {"name": "x", "spec": "x", "fingerprint": "f", "class_names": ["a", "b"], "splits": {}}
    config = {"model": "simple_cnn", "image_size": [32, 32], "batch_size": 8, "augment": "none"}
    metrics = {"best_epoch": 3, "best_value": 0.9, "monitor": "val_auc", "test": {}}
    text = report.train_markdown(
        config=config, env=env, data=data, phases=[], history=[], metrics=metrics, thermal=[]
    )
    assert "- best epoch: 3 by `val_auc`" in text
