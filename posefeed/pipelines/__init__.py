"""The DALI pipeline and the PyTorch-facing loader."""
