"""python -m keras_app.train: fine-tune one backbone on tf.data pipelines, write a run folder.

The recipe: frozen backbone and a new head first, then the top layers
unfrozen at a lower learning rate. A backbone without pretrained weights
trains end to end in one phase instead (a frozen random backbone teaches
nothing). Rerunning the same command after a crash resumes the unfinished run.
The steps are `keras_app.training.engine`'s; every flag is a `TrainConfig` field.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from keras_app.core.cli import import_tensorflow, run_cli
from keras_app.recipe.config import parse_config


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)  # argparse only: `--help` answers before TensorFlow loads
    import_tensorflow()
    from keras_app.reports.model_card import write_model_card
    from keras_app.training import engine

    run_dir = engine.main(config)
    if run_dir is not None:  # None: a worker other than the chief, which writes no folder
        write_model_card(run_dir)


if __name__ == "__main__":
    sys.exit(run_cli(main))
