"""keras_app.train_many: members trained in order, finished ones skipped, flags checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from keras_app import train_many as cli
from keras_app.core.errors import UsageError
from keras_app.experiments import train_many as tm
from keras_app.recipe.config import parse_config as parse_train_config


def finish(folder):
    folder.mkdir(parents=True)
    (folder / "best.keras").write_bytes(b"")
    (folder / "metrics.json").write_text("{}")


class FakeTrain:
    """Stands in for keras_app.series.Series.train: records each configuration."""

    def __init__(self):
        self.calls = []

    def __call__(self, config):
        self.calls.append(config)


def test_trains_each_model_in_order_skipping_finished_runs_resuming_unfinished(tmp_path, capsys):
    root = tmp_path / "runs"
    finish(root / "densenet121")
    (root / "xception").mkdir(parents=True)  # unfinished (no metrics.json): resumed by train
    (root / "xception" / "config.json").write_text("{}")
    config = cli.parse_config(
        [
            "--models",
            "resnet50,densenet121,xception",
            "--runs-root",
            str(root),
            "--data",
            "chest_xray/",
            "--fine-tune-epochs",
            "3",
        ]
    )
    train = FakeTrain()
    folders = tm.train_many(config, tm.member_configs(config), train)
    assert folders == [root / "resnet50", root / "densenet121", root / "xception"]
    # What `python -m keras_app.train <flags> --model M --run-dir <root>/M` parses to.
    assert train.calls == [
        parse_train_config(
            ["--data", "chest_xray/", "--fine-tune-epochs", "3", "--model", m]
            + ["--run-dir", str(root / m)]
        )
        for m in ("resnet50", "xception")
    ]
    out = capsys.readouterr().out
    assert "densenet121: finished run in" in out
    assert f"xception: resuming the unfinished run in {root / 'xception'}" in out
    assert f"resnet50: training in {root / 'resnet50'}" in out


def test_main_with_every_member_finished_trains_nothing_and_names_the_next_step(tmp_path, capsys):
    root = tmp_path / "runs"
    for model in ("resnet50", "mobilenetv3large"):
        finish(root / model)
    cli.main(["--models", "resnet50,mobilenetv3large", "--runs-root", str(root), "--alpha", "0.5"])
    out = capsys.readouterr().out
    # The README's command: the ensemble beside the members, not among them.
    command = (
        f"python -m keras_app.ensemble {root}/* --weights val-metric --out {tmp_path}/ensemble"
    )
    assert command in out
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    assert command.replace(str(root), "runs/members").replace(str(tmp_path), "runs") in readme


def test_next_step_lists_the_members_where_the_runs_root_holds_other_folders(tmp_path):
    root = tmp_path / "runs"
    for model in ("resnet50", "xception", "cv-resnet50-20260101"):
        finish(root / model)
    config = cli.parse_config(["--models", "resnet50,xception", "--runs-root", str(root)])
    step = tm.next_step(config, [root / "resnet50", root / "xception"])
    assert step == (
        f"python -m keras_app.ensemble {root / 'resnet50'} {root / 'xception'} "
        f"--weights val-metric --out {tmp_path / 'ensemble'}"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "resnet50,resnet50"], "resnet50 more than once"),
        (["--models", "resnet50,resnet5"], r"unknown backbones \['resnet5'\]"),
        (["--models", ","], "at least one backbone"),
        (["--models", "resnet50", "--model", "xception"], r"Received \['--model'\]"),
        (["--models", "resnet50", "--run-dir=x"], r"Received \['--run-dir=x'\]"),
    ],
)
def test_bad_command_lines(argv, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        tm.member_configs(cli.parse_config([*argv, "--runs-root", str(tmp_path)]))


def test_training_flags_are_checked_for_every_member_before_any_trains(tmp_path):
    config = cli.parse_config(
        ["--models", "mobilenetv3large,resnet50", "--runs-root", str(tmp_path), "--alpha", "0.5"]
    )
    with pytest.raises(UsageError, match="--alpha applies to the MobileNets only, not resnet50"):
        tm.member_configs(config)
    finish(tmp_path / "resnet50")  # already trained: its flags no longer matter
    tm.member_configs(config)


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("runs/members", "runs/ensemble"),
        ("runs", "ensemble"),
        ("runs/ensemble", "runs/ensemble-ensemble"),  # beside it, not the root itself
    ],
)
def test_the_ensemble_is_written_beside_the_runs_root_never_inside(root, expected):
    out = tm.ensemble_dir(root)
    assert out == Path(expected)
    assert Path(root) not in out.parents
