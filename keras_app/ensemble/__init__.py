"""Ensembles of trained runs: members' probabilities combined inside one Keras model.

Importing this package registers `EnsembleCombine`, which loading a saved
ensemble (`keras.models.load_model(..., safe_mode=True)`) needs. The command
line (`python -m keras_app.ensemble`) lives in `keras_app.ensemble.cli`.
"""

from keras_app.ensemble.layer import EnsembleCombine
from keras_app.ensemble.model import build_ensemble, stack_members

__all__ = ["EnsembleCombine", "build_ensemble", "stack_members"]
