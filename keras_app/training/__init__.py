"""One training run: runtime, phases, callbacks, distribution, the run folder it fills."""
