"""Training: the common loop, checkpoints, and the per-method trainers."""
