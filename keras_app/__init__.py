"""keras-app: transfer-learning image classifiers with Keras 3 and TensorFlow."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) buries the CLI's own
# output; set before TensorFlow is first imported, and only where the user has not.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
