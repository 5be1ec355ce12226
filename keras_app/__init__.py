"""keras-app: transfer-learning image classifiers with Keras 3 and TensorFlow.

`import keras_app` registers every custom Keras object the product saves, so a
notebook needs nothing else before `keras.models.load_model(path, safe_mode=True)`.
"""

import sys

from keras_app.runtime import import_tensorflow, tensorflow_env_defaults

tensorflow_env_defaults()

# `python -m keras_app.train` imports this package first, while sys.argv[0] is still
# "-m" (the documented state while -m locates the module). There the registration
# would load Keras before argparse runs and cost `--help` seconds; the commands'
# model-loading paths (runs.load_model, inference.load_keras) import custom_objects
# themselves once they need it.
if sys.argv[:1] != ["-m"]:
    import_tensorflow()
    import keras_app.custom_objects  # noqa: E402, F401
