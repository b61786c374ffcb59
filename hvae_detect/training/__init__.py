"""Training: the settings of a run, where its batches come from, the epoch loop, and torchrun."""
