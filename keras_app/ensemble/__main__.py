import sys

from keras_app.ensemble.cli import main
from keras_app.errors import run_cli

sys.exit(run_cli(main))
