"""Detection box math: one responsibility per module."""
