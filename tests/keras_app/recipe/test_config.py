"""The command line becomes one checked, frozen TrainConfig."""

import dataclasses
import inspect
import json

import pytest

from keras_app.core.errors import UsageError
from keras_app.recipe.config import TrainConfig, build_parser, parse_config, parse_unfreeze


def test_defaults_match_the_dataclass():
    assert parse_config([]) == TrainConfig()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_config([]).lr = 1.0


def test_every_flag_is_documented_with_its_default():
    text = build_parser().format_help()
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
    flat = " ".join(text.split())
    assert "(default: 12)" in flat and "(default: 0.001)" in flat


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "xception", "--image-size", "64"], "below xception's minimum of 71"),
        (["--head-epochs", "0", "--fine-tune-epochs", "0"], "nothing to train"),
        (["--lr", "0"], "--lr must be > 0. Received 0"),
        (["--unfreeze", "some"], "Received 'some'"),
        (["--unfreeze", "0"], "a fraction of them in \\(0, 1\\).*Received '0'"),
        (["--unfreeze", "1.5"], "Received '1.5'"),
        (["--unfreeze", "0.0"], "Received '0.0'"),
        (["--alpha", "0.5", "--model", "resnet50"], "MobileNets only"),
        (["--model", "simple_cnn", "--weights", "imagenet"], "no ImageNet weights"),
        (["--thermal-limit", "60", "--thermal-resume", "70"], "must be below"),
        (["--thermal-limit", "60", "--thermal-resume", "60"], "Received 60.0 >= 60.0"),
        (["--val-fraction", "0.7"], "Received 0.7"),
        (["--label-smoothing", "1"], "--label-smoothing must be in \\[0, 1\\)"),
        (["--outside-lungs-p", "0"], "--outside-lungs-p must be in \\(0, 1\\]. Received 0.0"),
    ],
)
def test_bad_values_are_named(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_config(argv)


@pytest.mark.parametrize("text, parsed", [("all", "all"), ("43", 43), ("0.5", 0.5)])
def test_unfreeze_is_all_a_count_or_a_fraction(text, parsed):
    assert parse_unfreeze(text) == parsed
    assert type(parse_unfreeze(text)) is type(parsed)


def test_unknown_model_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config(["--model", "alexnet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'alexnet'" in err


def test_every_field_is_a_flag_described_in_its_metadata():
    parser = build_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        action = by_dest[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        assert action.help == f.metadata["help"]
        assert action.default == f.default
        if f.metadata["choices"] is not None:
            assert list(action.choices) == list(f.metadata["choices"])


def test_config_json_keeps_its_keys_and_loads_back():
    # The keys run folders written before flags came from metadata hold (config.json).
    old_keys = (
        "model data run_dir image_size alpha weights batch_size head_epochs lr "
        "fine_tune_epochs fine_tune_lr unfreeze dropout augment class_weight monitor "
        "target_sensitivity patience precision jit strategy val_fraction seed cache "
        "pad_to_aspect steps_per_epoch thermal thermal_limit thermal_resume thermal_max_pause"
    ).split()
    written = json.loads(json.dumps(TrainConfig().to_dict()))
    # New fields come after the old ones, with defaults, so an old config.json loads.
    assert list(written)[: len(old_keys)] == old_keys
    assert list(written)[len(old_keys) :] == [
        "fine_tune_bn",
        "lr_schedule",
        "scratch_epochs",
        "feature_cache",
        "feature_cache_views",
        "image_guard",
        "label_smoothing",
        "label",
        "path_column",
        "patient_column",
        "uncertain",
        "outside_lungs",
        "outside_lungs_p",
        "thorax_crop",
        "refer_band",
    ]
    assert TrainConfig(**{k: written[k] for k in old_keys}).feature_cache is True
    assert TrainConfig(**written) == TrainConfig()
    old = {k: v for k, v in written.items() if k in old_keys}
    assert TrainConfig(**old).model == "xception"  # an old config.json still loads


@pytest.mark.parametrize(
    "argv, thermal", [([], True), (["--no-thermal"], False), (["--thermal"], True)]
)
def test_thermal_switch_both_ways(argv, thermal):
    assert parse_config(argv).thermal is thermal


def test_thermal_max_pause_differs_from_the_guard_for_the_stated_reason():
    from callbacks.thermal import ThermalGuard

    guard_default = inspect.signature(ThermalGuard).parameters["max_pause_s"].default
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}["thermal_max_pause"]
    # The reason given: the command waits longer than the library before it stops a run.
    assert field.default > guard_default
    assert f"ThermalGuard's library default ({guard_default:g} s)" in field.metadata["why"]


@pytest.mark.parametrize("fraction, ok", [(0.0, False), (0.1, True), (0.5, True), (0.51, False)])
def test_val_fraction_bounds_are_the_data_layers(fraction, ok):
    from data_pipelines import load_dataset
    from data_pipelines.errors import DataError

    argv = ["--val-fraction", str(fraction)]
    if ok:
        assert parse_config(argv).val_fraction == fraction
        load_dataset("digits", val_fraction=fraction)
    else:
        with pytest.raises(UsageError, match=rf"in \(0, 0.5\]. Received {fraction}"):
            parse_config(argv)
        with pytest.raises(DataError, match=r"in \(0, 0.5\]"):
            load_dataset("digits", val_fraction=fraction)


def test_manifest_flags_reach_load_dataset(monkeypatch):
    import types

    import data_pipelines
    from data_pipelines.manifest import UNCERTAIN_POLICIES
    from keras_app.recipe import config
    from keras_app.training import datasets as train

    assert config.UNCERTAIN_POLICIES == UNCERTAIN_POLICIES
    received = {}

    def load_dataset(spec, **kwargs):
        received.update(kwargs, spec=spec)
        return types.SimpleNamespace(summary=lambda: "data")

    monkeypatch.setattr(data_pipelines, "load_dataset", load_dataset)
    argv = ["--data", "x.csv", "--label", "Pneumonia", "--uncertain", "ones"]
    train.load_data(parse_config(argv))
    assert received["manifest"] == data_pipelines.ManifestOptions("Pneumonia", uncertain="ones")
    train.load_data(parse_config([]))
    assert received["manifest"] == data_pipelines.ManifestOptions()


def test_target_sensitivity_takes_none_for_the_most_probable_class():
    from keras_app.recipe.config import parse_config

    assert parse_config(["--model", "simple_cnn"]).target_sensitivity == 0.97
    assert parse_config(["--target-sensitivity", "none"]).target_sensitivity is None
    assert parse_config(["--target-sensitivity", "0.9"]).target_sensitivity == 0.9
    with pytest.raises(SystemExit):
        parse_config(["--target-sensitivity", "high"])


def test_refer_band_is_off_by_default_round_trips_and_refuses_a_bad_share(capsys):
    from keras_app.core.cli import run_cli
    from keras_app.decision.operating_point import MAX_REFER_SHARE
    from keras_app.recipe import config

    assert config.MAX_REFER_SHARE == MAX_REFER_SHARE  # recipe cannot import decision
    assert parse_config([]).refer_band is None
    chosen = parse_config(["--refer-band", "0.05"])
    assert chosen.refer_band == 0.05
    written = json.loads(json.dumps(chosen.to_dict()))
    assert TrainConfig(**written) == chosen
    assert parse_config(["--refer-band", "none"]).refer_band is None
    for bad in ("0", "0.7", "-1"):
        assert run_cli(parse_config, ["--refer-band", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"--refer-band must be in (0, 0.5]. Received {float(bad)}" in err
