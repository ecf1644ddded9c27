"""Training: the runner (train / evaluate / export from a config), the model_fn skeleton, distribution
strategies, synchronized batch norm, precision, optimizers and schedules, warm start."""
