"""Experiments that train and evaluate: the multi-seed experiment and the documented sweep.

They sit above `soo_jax.eval` in the import order (data -> models -> lora -> soo -> train -> eval
-> experiments) because they run training as well as evaluation.
"""
