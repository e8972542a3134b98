"""Handwritten digits: the source's small CNN in PyTorch (registered model `mnist`)."""
