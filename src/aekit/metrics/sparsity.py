"""Activation statistics of sparse (sigmoid) codes."""

from __future__ import annotations

from typing import Any

import torch

LOW_ACTIVATION = 0.05  # "near zero" for the sparsity fraction
DEAD_ACTIVATION = 0.1  # a unit is dead if its activation never exceeds this on the test set


def sparsity_metrics(codes: torch.Tensor, target: float | None = None) -> dict[str, Any]:
    """Activation statistics of (N, D) sigmoid codes.

    A unit is *dead* if its activation never exceeds ``DEAD_ACTIVATION`` (0.1) on any test image:
    it never turns on, so it carries no information.
    """
    codes = codes.double()
    per_unit_mean = codes.mean(0)
    per_unit_max = codes.max(0).values if len(codes) else torch.zeros(codes.shape[1])
    dead = [int(j) for j in torch.nonzero(per_unit_max <= DEAD_ACTIVATION).flatten()]
    return {
        "mean_activation": float(codes.mean()),
        "target_activation": target,
        "fraction_below_0.05": float((codes < LOW_ACTIVATION).double().mean()),
        "units_on_per_image": float((codes > 0.5).double().sum(1).mean()),
        "dead_units": len(dead),
        "dead_unit_indices": dead,
        "dead_definition": f"activation never above {DEAD_ACTIVATION} on the test set",
        "mean_activation_per_unit": [round(float(v), 5) for v in per_unit_mean],
        "latent_dim": codes.shape[1],
    }
