"""keras_app.sweep: the plan from the command line, resuming, failures, results, HParams."""

from __future__ import annotations

import csv
import json

import pytest

from keras_app import sweep as sweep_cli
from keras_app.artifacts import folders
from keras_app.artifacts.runs import RunFolder
from keras_app.core.cli import run_cli
from keras_app.core.errors import UsageError
from keras_app.experiments import sweep, sweep_results
from keras_app.experiments.series import Series

# Tiny runs on the embedded digits: 8x8 images at 16 px, one epoch of two steps.
TINY = [
    "--model",
    "simple_cnn",
    "--data",
    "digits",
    "--image-size",
    "16",
    "--head-epochs",
    "1",
    "--fine-tune-epochs",
    "0",
    "--steps-per-epoch",
    "2",
    "--augment",
    "none",
]


def hparams_records(folder):
    """The HParams plugin's records in the event files directly in `folder`, parsed."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = []
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData()
                    data.ParseFromString(value.metadata.plugin_data.content)
                    found.append(data)
    return found


def rows_of(out):
    with (out / folders.SWEEP_CSV).open() as f:
        return list(csv.DictReader(f))


# --- the plan, without training ------------------------------------------------------------------


def test_grid_values_take_the_field_types():
    config = sweep_cli.parse_config(
        ["--grid", "lr=1e-3,3e-4", "batch_size=16,32", "--out", "o", *TINY]
    )
    trials = sweep.plan_trials(config)
    assert [t.name for t in trials] == [
        "lr0.001_bs16",
        "lr0.001_bs32",
        "lr0.0003_bs16",
        "lr0.0003_bs32",
    ]
    assert trials[1].config.batch_size == 32 and isinstance(trials[1].config.batch_size, int)
    assert trials[2].config.lr == 3e-4
    assert {t.config.seed for t in trials} == {42}
    assert trials[0].config.run_dir.endswith("lr0.001_bs16")


def test_random_draws_are_reproducible_and_in_range():
    argv = ["--random", "5", "--range", "lr=1e-4:1e-2:log", "--grid", "batch_size=8,16"]
    argv += ["--out", "o", *TINY]
    first = sweep.plan_trials(sweep_cli.parse_config(argv))
    again = sweep.plan_trials(sweep_cli.parse_config(argv))
    assert [t.overrides for t in first] == [t.overrides for t in again]
    assert len(first) == 5
    assert all(1e-4 <= t.config.lr <= 1e-2 and t.config.batch_size in (8, 16) for t in first)


def test_random_sweep_declares_its_ranges_to_tensorboard(tmp_path):
    out = tmp_path / "sweep"
    argv = ["--random", "3", "--range", "lr=1e-4:1e-2:log", "patience=1:5"]
    config = sweep_cli.parse_config([*argv, "--out", str(out), *TINY])
    trials = sweep.plan_trials(config)
    assert all(isinstance(t.config.patience, int) for t in trials)
    sweep_results.write_sweep_hparams(config, trials)
    (root,) = hparams_records(out)
    infos = {h.name: h for h in root.experiment.hparam_infos}
    assert infos["lr"].domain_interval.min_value == pytest.approx(1e-4)
    assert infos["patience"].domain_interval.max_value == 5


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--grid", "learning_rate=1e-3"], "not a TrainConfig field"),
        (["--grid", "batch_size=big"], "batch_size takes int values"),
        (["--grid", "lr"], "FIELD=VALUES"),
        (["--range", "lr=1e-4:1e-2"], "add --random"),
        (["--grid", "run_dir=a,b"], "cannot vary run_dir"),
        (["--grid", "lr=-1"], "--lr must be > 0"),
        ([], "needs --grid"),
    ],
)
def test_bad_sweeps_are_one_line_and_exit_2(argv, words, capsys):
    assert run_cli(sweep_cli.main, [*argv, "--out", "o", *TINY]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_pareto_front_and_budget():
    points = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.85), (4.0, 0.95), (0.5, 0.70)]
    assert sweep_results.pareto_front(points) == [4, 0, 1, 3]
    rows = [
        {"name": str(i), "status": "finished", "wall_minutes": m, "val_auc": a}
        for i, (m, a) in enumerate(points)
    ]
    rows.append({"name": "x", "status": "failed", "wall_minutes": 0.1, "val_auc": 0.99})
    assert sweep_results.best_within(rows, 2.5)["name"] == "1"
    assert sweep_results.best_within(rows, None)["name"] == "3"
    assert sweep_results.best_within(rows, 0.2) is None


# --- a real tiny sweep ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """A 2x2 grid on digits, killed in its third run (after that run's training, before its
    evaluation), and run again."""
    from keras_app.training import engine as train

    out = tmp_path_factory.mktemp("sweep") / "sweep-grid"
    argv = ["--grid", "lr=1e-2,3e-3", "batch_size=16,32", "--out", str(out), *TINY]
    argv += ["--budget-minutes", "30"]
    trained = []
    real = Series().train

    def counting(config):
        trained.append(config.run_dir)
        return real(config)

    def killed(*args, **kwargs):
        if len(trained) == 3:
            raise KeyboardInterrupt  # what a kill does: nothing records it
        return evaluate_best(*args, **kwargs)

    evaluate_best = train.evaluate_best
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(train, "evaluate_best", killed)
        sweep_cli.main(argv, train_one=counting)
    first = list(trained)
    trained.clear()
    assert sweep_cli.main(argv, train_one=counting) == 0
    return out, first, list(trained)


@pytest.mark.slow
def test_grid_sweep_ends_with_four_rows_and_a_chart(grid_sweep):
    out, _, _ = grid_sweep
    rows = rows_of(out)
    assert len(rows) == 4
    assert {r["status"] for r in rows} == {"finished"}
    assert {(r["lr"], r["batch_size"]) for r in rows} == {
        ("0.01", "16"),
        ("0.01", "32"),
        ("0.003", "16"),
        ("0.003", "32"),
    }
    for row in rows:
        assert float(row["wall_minutes"]) > 0 and int(row["epochs"]) == 1
        assert 0 <= float(row["val_auc"]) <= 1 and row["model"] == "simple_cnn"
    chart = (out / folders.SWEEP_CHART).read_bytes()
    assert chart.startswith(b"\x89PNG") and len(chart) > 5000
    assert (out / "report.html").is_file()  # the sweep's model card
    summary = (out / folders.SUMMARY).read_text()
    assert "Best configuration within 30 minutes" in summary
    assert "python -m keras_app.train --model simple_cnn" in summary


@pytest.mark.slow
def test_rerun_after_a_kill_trains_only_what_is_missing(grid_sweep, capsys):
    out, first, second = grid_sweep
    assert len(first) == 3 and len(second) == 2
    killed = first[2]
    assert second[0] == killed  # the unfinished run, resumed
    assert not set(first[:2]) & set(second)
    assert sorted(set(first + second)) == sorted(
        str(p) for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    assert RunFolder(killed).is_finished()
    # Its wall time still counts the training its killed attempt finished.
    record = json.loads((RunFolder(killed) / folders.TRIAL_RECORD).read_text())
    phases = RunFolder(killed).progress()["phases"]
    assert record["wall_seconds"] >= sum(p["seconds"] for p in phases) > 0


@pytest.mark.slow
def test_hparams_summaries_exist_and_parse(grid_sweep):
    out, _, _ = grid_sweep

    (root,) = hparams_records(out)
    assert {h.name for h in root.experiment.hparam_infos} == {"lr", "batch_size"}
    assert {m.name.tag for m in root.experiment.metric_infos} >= {"test_auc", "wall_minutes"}
    run = out / "lr0.01_bs16" / "logs"
    (session,) = [r for r in hparams_records(run) if r.HasField("session_start_info")]
    assert session.session_start_info.hparams["lr"].number_value == pytest.approx(0.01)
    assert session.session_start_info.hparams["batch_size"].number_value == 16
    assert list((run / "validation").glob("events.out.tfevents.*"))
    assert list((run / sweep.HPARAMS_DIR).glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_diverging_config_is_recorded_as_failed_and_the_sweep_finishes(tmp_path):
    out = tmp_path / "sweep-nan"
    argv = ["--grid", "lr=1e-2,1e30", "--out", str(out), *TINY]
    assert sweep_cli.main(argv) == 0
    rows = {r["name"]: r for r in rows_of(out)}
    assert rows["lr0.01"]["status"] == "finished"
    assert rows["lr1e30"]["status"] == "failed"
    assert "NaN" in rows["lr1e30"]["reason"] or "nan" in rows["lr1e30"]["reason"]
    record = json.loads((out / "lr1e30" / folders.TRIAL_RECORD).read_text())
    assert record["status"] == "failed"
    assert "failed" in (out / folders.SUMMARY).read_text()


def test_an_exception_is_recorded_with_its_reason(tmp_path):
    out = tmp_path / "sweep-oom"
    argv = ["--grid", "batch_size=8,16", "--out", str(out), *TINY]

    def out_of_memory(config):
        if config.batch_size == 16:
            raise MemoryError("could not allocate 8 GiB")
        (tmp_path / "trained").write_text(config.run_dir)

    assert sweep_cli.main(argv, train_one=out_of_memory) == 0
    rows = {r["name"]: r for r in rows_of(out)}
    assert rows["bs16"]["reason"] == "MemoryError: could not allocate 8 GiB"
    assert rows["bs16"]["status"] == "failed"
    # Rerun: the failed one stays failed (not retried) unless --retry-failed.
    calls = []
    assert sweep_cli.main(argv, train_one=calls.append) == 0
    assert calls == [] or all(c.batch_size == 8 for c in calls)
    sweep_cli.main([*argv, "--retry-failed"], train_one=calls.append)
    assert any(c.batch_size == 16 for c in calls)


def test_a_folder_of_another_sweep_is_refused(tmp_path):
    out = tmp_path / "sweep"
    (out / "lr0.01").mkdir(parents=True)
    (out / "lr0.01" / "config.json").write_text(json.dumps({"lr": 0.01, "head_epochs": 9}))
    with pytest.raises(UsageError, match="another head_epochs"):
        sweep_cli.main(["--grid", "lr=1e-2", "--out", str(out), *TINY], train_one=print)
