"""Judging a trained model: metrics on a split, Grad-CAM, the evaluation report."""
