"""Training: simulator, labels, datasets, models, off-policy evaluation, tracking."""
