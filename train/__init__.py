"""fastyolo.train: the PyTorch side (network, training, export). Needs the `[train]` extra."""
