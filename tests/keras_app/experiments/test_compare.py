"""keras_app.compare: the modes' budgets, skipping and failures, and the study end to end."""

from __future__ import annotations

import csv
import json

import pytest

from keras_app import compare as compare_cli
from keras_app.artifacts.folders import COMPARISON_TIMINGS
from keras_app.artifacts.runs import RunFolder
from keras_app.core.cli import run_cli
from keras_app.core.errors import UsageError
from keras_app.experiments import compare
from keras_app.recipe.config import TrainConfig
from keras_app.recipe.config import parse_config as parse_train_config
from tests.makers import write_folder

QUICK = ["--image-size", "32", "--batch-size", "8", "--augment", "none", "--unfreeze", "5"]


def configurations(argv, tmp_path):
    config = compare_cli.parse_config(argv)
    return compare.plan(config, tmp_path)


def flag(c, name):
    """The value of a training flag in a configuration's TrainConfig."""
    return getattr(c.config, name.removeprefix("--").replace("-", "_"))


def test_every_mode_gets_the_same_epoch_budget(tmp_path):
    found, notes = configurations(
        [
            "--models",
            "simple_cnn,resnet50",
            "--data",
            "digits",
            "--head-epochs",
            "2",
            "--fine-tune-epochs",
            "3",
        ],
        tmp_path,
    )
    by_name = {c.name: c for c in found}
    assert list(by_name) == [
        "simple_cnn-scratch",
        "resnet50-scratch",
        "resnet50-head",
        "resnet50-finetune",
    ]
    budget = {
        name: (
            flag(c, "--weights"),
            int(flag(c, "--head-epochs")),
            int(flag(c, "--fine-tune-epochs")),
        )
        for name, c in by_name.items()
    }
    # scratch: one end-to-end phase of 2 + 3; head: 5 with the backbone frozen; finetune: 2 + 3.
    assert budget == {
        "simple_cnn-scratch": ("none", 2, 3),
        "resnet50-scratch": ("none", 2, 3),
        "resnet50-head": ("imagenet", 5, 0),
        "resnet50-finetune": ("imagenet", 2, 3),
    }
    assert by_name["resnet50-head"].run_dir == tmp_path / "resnet50-head"
    assert flag(by_name["resnet50-head"], "--run-dir") == str(tmp_path / "resnet50-head")
    # What `python -m keras_app.train <flags> --model resnet50 --run-dir ...` parses to.
    assert by_name["resnet50-finetune"].config == parse_train_config(
        ["--data", "digits", "--head-epochs", "2", "--fine-tune-epochs", "3"]
        + ["--model", "resnet50", "--run-dir", str(tmp_path / "resnet50-finetune")]
        + ["--weights", "imagenet"]
    )
    assert notes == [
        f"simple_cnn {mode}: skipped, simple_cnn has no pretrained weights (scratch only)"
        for mode in ("head", "finetune")
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--models", "resnet50", "--head-epochs", "2", "--fine-tune-epochs", "0"],
            "--modes finetune needs --fine-tune",
        ),
        (["--models", "resnet50", "--weights", "none"], "--weights none leaves nothing pretrained"),
        (["--models", "resnet50,vgg16", "--weights", "w.h5"], "is one backbone's weights file"),
        (["--models", "resnet50", "--dropout", "2"], "--dropout must be in [0, 1)"),
    ],
)
def test_plans_the_budget_cannot_give_are_refused(tmp_path, argv, message):
    with pytest.raises(UsageError) as err:
        configurations([*argv, "--data", "digits"], tmp_path)
    assert message in str(err.value)


def test_scratch_alone_needs_no_pretrained_weights(tmp_path):
    found, notes = configurations(
        [
            "--models",
            "resnet50",
            "--modes",
            "scratch",
            "--weights",
            "none",
            "--head-epochs",
            "2",
            "--fine-tune-epochs",
            "0",
        ],
        tmp_path,
    )
    assert [c.name for c in found] == ["resnet50-scratch"] and notes == []


def test_a_failing_configuration_is_noted_and_the_others_go_on(tmp_path):
    found, _ = configurations(["--models", "mobilenet", "--modes", "scratch,head"], tmp_path)
    calls = []

    def train(config):
        calls.append(config)
        if config.weights == "imagenet":
            raise UsageError("ImageNet weights for mobilenet could not be loaded")
        run_dir = tmp_path / "mobilenet-scratch"
        run_dir.mkdir()
        for name in ("best.keras", "metrics.json"):
            (run_dir / name).write_text("{}")

    failures = compare.train_all(found, tmp_path, train)
    assert len(calls) == 2
    assert failures == {"mobilenet-head": "ImageNet weights for mobilenet could not be loaded"}
    assert list(json.loads((tmp_path / COMPARISON_TIMINGS).read_text())) == ["mobilenet-scratch"]
    # A rerun trains only what is not finished.
    calls.clear()
    compare.train_all(found, tmp_path, train)
    assert len(calls) == 1 and calls[0].weights == "imagenet"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "resnet50", "--model", "vgg16"], "compare sets --model and --run-dir"),
        (["--models", "nope"], "--models has unknown backbones ['nope']"),
        (
            ["--models", "resnet50", "--modes", "scratch,full"],
            "--modes takes scratch, head, finetune",
        ),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(capsys, argv, message):
    assert run_cli(compare_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """simple_cnn and mobilenet in scratch and finetune mode (simple_cnn's finetune skipped),
    mobilenet pretrained from a weights file: nothing downloads."""
    from keras_app.model.classifier import BACKBONE_LAYER, build_classifier

    root = tmp_path_factory.mktemp("compare")
    data = write_folder(root / "xray", n_per_class=16, size=32)
    weights = root / "mobilenet.weights.h5"
    build_classifier("mobilenet", 2, (32, 32)).get_layer(BACKBONE_LAYER).save_weights(weights)
    out = root / "study"
    compare_cli.main(
        [
            "--models",
            "simple_cnn,mobilenet",
            "--modes",
            "scratch,finetune",
            "--data",
            str(data),
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--head-epochs",
            "1",
            "--fine-tune-epochs",
            "1",
            *QUICK,
        ]
    )
    return out


@pytest.mark.slow
def test_study_writes_the_csv_table_and_chart(study):
    with (study / "comparison_metrics.csv").open() as f:
        rows = {f"{r['model']}-{r['mode']}": r for r in csv.DictReader(f)}
    assert list(rows) == ["simple_cnn-scratch", "mobilenet-scratch", "mobilenet-finetune"]
    for name, row in rows.items():
        assert row["status"] == "trained", name
        for key in (
            "train_accuracy",
            "train_loss",
            "val_accuracy",
            "val_loss",
            "epochs",
            "wall_s",
            "total_params",
            "trainable_params",
        ):
            assert row[key] != "", (name, key)
        assert int(row["epochs"]) == 2  # the same budget: 1 + 1
    assert rows["mobilenet-scratch"]["weights"] == "none"
    assert rows["mobilenet-finetune"]["weights"].endswith("mobilenet.weights.h5")
    # The same network; fine-tuning 5 layers trains less of it than training from scratch.
    assert rows["mobilenet-scratch"]["total_params"] == rows["mobilenet-finetune"]["total_params"]
    assert int(rows["mobilenet-finetune"]["trainable_params"]) < int(
        rows["mobilenet-scratch"]["trainable_params"]
    )
    table = (study / "comparison.md").read_text()
    assert "| model | mode | weights | epochs |" in table
    assert "simple_cnn finetune: skipped, simple_cnn has no pretrained weights" in table
    assert (study / "comparison.png").stat().st_size > 0
    for name in rows:
        assert (study / name / "best.keras").is_file()


@pytest.mark.slow
def test_study_out_with_other_flags_is_refused(study, capsys):
    assert (
        run_cli(
            compare_cli.main,
            [
                "--models",
                "simple_cnn",
                "--modes",
                "scratch",
                "--out",
                str(study),
                "--data",
                "digits",
            ],
        )
        == 2
    )
    assert "holds a comparison with another configuration" in capsys.readouterr().err


def finetune_run(make_run, best_epoch: int, val_auc: float):
    """A finished finetune run folder: 2 head epochs then 2 fine-tune epochs."""
    path = make_run("resnet50-finetune")
    phases = [
        {
            "name": "head",
            "start_epoch": 0,
            "end_epoch": 2,
            "trainable_params": 2050,
            "seconds": 1.0,
        },
        {"name": "fine_tune", "start_epoch": 2, "end_epoch": 4, "trainable_params": 208114}
        | {"seconds": 2.0},
    ]
    (path / "progress.json").write_text(json.dumps({"phases": phases}))
    rows = "".join(f"{e},0.{e},0.{e}\n" for e in range(4))  # CSVLogger counts from 0
    (path / "training.csv").write_text("epoch,accuracy,loss\n" + rows)
    metrics = {"best_epoch": best_epoch, "val": {"roc_auc": val_auc, "accuracy": 0.7}, "test": {}}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return compare.Configuration("finetune", TrainConfig(model="resnet50", run_dir=str(path)))


def test_finetune_row_says_when_the_fine_tuned_weights_were_discarded(make_run, tmp_path):
    row = compare.collect_row(finetune_run(make_run, best_epoch=2, val_auc=0.64), tmp_path)
    # Epoch 2 (1-based, as Keras logs it) is the head phase's last.
    assert row["best_epoch"] == 2 and row["train_accuracy"] == pytest.approx(0.1)
    assert row["best_phase"] == "head (fine_tune weights discarded: no fine_tune epoch beat it)"
    assert row["trainable_params"] == 2050  # the head phase's, whose weights were kept


def test_finetune_row_best_in_fine_tuning_lists_its_trainable_parameters(make_run, tmp_path):
    row = compare.collect_row(finetune_run(make_run, best_epoch=3, val_auc=0.64), tmp_path)
    assert row["best_epoch"] == 3 and row["best_phase"] == "fine_tune"
    assert row["trainable_params"] == 208114


def test_one_auc_computed_one_way_in_the_table_and_on_the_console(make_run, tmp_path):
    c = finetune_run(make_run, best_epoch=3, val_auc=0.64)
    row = compare.collect_row(c, tmp_path)
    table = compare.comparison_markdown([row], [], compare.CompareConfig(models=("resnet50",)))
    assert "| val ROC AUC (scikit-learn) |" in table and "| 0.6400 |" in table
    assert "val AUC |" not in table  # no unlabelled AUC column
    line = compare.val_auc_line(RunFolder(c.run_dir))
    assert line.startswith("val ROC AUC 0.6400 (scikit-learn, best checkpoint")
