"""Every folder the product writes (run, ensemble, evaluation, sweep, CV, comparison) and how
it is read back: file names, kinds, the resume rule, the one model loader."""
