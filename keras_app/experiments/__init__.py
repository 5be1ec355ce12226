"""Many runs: series of trainings (compare, cv, train_many, sweep) and ensembles of runs."""
