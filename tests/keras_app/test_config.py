"""The command line becomes one checked, frozen TrainConfig."""

import dataclasses

import pytest

from keras_app.config import TrainConfig, build_parser, parse_config
from keras_app.errors import UsageError


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
    assert "(default: 3)" in flat and "(default: 0.001)" in flat


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "xception", "--image-size", "64"], "below xception's minimum of 71"),
        (["--head-epochs", "0", "--fine-tune-epochs", "0"], "nothing to train"),
        (["--lr", "0"], "--lr must be > 0. Received 0"),
        (["--unfreeze", "some"], "Received 'some'"),
        (["--alpha", "0.5", "--model", "resnet50"], "MobileNets only"),
        (["--model", "simple_cnn", "--weights", "imagenet"], "no ImageNet weights"),
        (["--thermal-limit", "60", "--thermal-resume", "70"], "must be below"),
        (["--thermal-limit", "60", "--thermal-resume", "60"], "Received 60.0 >= 60.0"),
        (["--val-fraction", "0.7"], "Received 0.7"),
    ],
)
def test_bad_values_are_named(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_config(argv)


def test_unknown_model_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config(["--model", "alexnet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'alexnet'" in err
