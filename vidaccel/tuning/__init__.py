"""Tuning sparse attention to the model (`vidaccel.tune`): measured recall per layer and head, chosen under
a budget, written as a sparsity profile that `TunedAttentionConfig` runs."""

from .tuner import candidate_costs, tune

__all__ = ["tune", "candidate_costs"]
