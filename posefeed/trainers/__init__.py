"""Thin PyTorch trainers, models, losses and metrics."""
