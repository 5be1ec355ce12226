"""The screening decision in NumPy: the operating point and the clinical metrics it is judged by."""
