"""Training infrastructure shared by every trainer: checkpoints, metric writers (and, later, the fused step)."""
