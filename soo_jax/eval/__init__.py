"""Evaluation: scoring of deception / Perspectives responses and MT-Bench answer generation."""
from soo_jax.eval.scoring import (
    DeceptionLabel, PerspectivesLabel, classify_deception, classify_perspectives, condition_name,
    deception_rates, first_mentioned_room, is_deceptive_authors_rule, order_balanced_metrics,
    perspectives_rates, summarise, with_swapped,
)
