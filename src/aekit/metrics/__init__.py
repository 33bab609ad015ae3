"""Metrics of a trained model, one module per group; :mod:`aekit.evaluation` composes them."""
