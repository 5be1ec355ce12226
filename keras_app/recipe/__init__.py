"""What a run is made of, as plain data: the backbone registry and the training configuration."""
