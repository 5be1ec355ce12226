"""A trained model at work: one Predictor for every form it takes, calibration on a split,
the SavedModel export and the TF Serving clients."""
