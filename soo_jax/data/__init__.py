"""Data layer: deception scenarios, SOO prompt pairs, tokenisation and batching of pairs."""
from soo_jax.data.batching import (
    PairBatch, TokenBatch, batch_pairs, batch_prompts, encode_prompts, left_pad, padded_length,
    padding_id,
)
from soo_jax.data.general_prompts import (
    GeneralPrompt, load_general_prompt_records, load_general_prompts,
)
from soo_jax.data.pairs import (
    LATENT_SOO_PAIR_TEMPLATE, SOO_PAIR_TEMPLATES, PromptPair, batch_indices, epoch_order,
    latent_soo_pairs, soo_template_number, soo_training_pairs, steps_per_epoch,
)
from soo_jax.data.scenarios import (
    combinations_from, false_recommendation_scenarios, generalisation_scenarios,
    generate_combinations, load_combinations, load_reference_scenarios, perspectives_scenarios,
)
from soo_jax.data.templates import (
    ALL_KINDS, ARXIV_ANSWER_SUFFIX_BY_MODEL, ARXIV_MISTRAL_ANSWER_SUFFIX, BURGLAR,
    BURGLAR_FAMILY, CHEAP_OBJECTS, DECEPTION_KINDS, ESCAPE_ROOM, EXPENSIVE_TEST_OBJECTS,
    GENERALISATION_KINDS, HONESTY_PROMPT_TEMPLATE, PERSPECTIVES, REPO_ANSWER_SUFFIX,
    ROOM_ONLY_ANSWER_SUFFIX, ROOMS, SOO_TRAINING_ITEMS, TREASURE_HUNT, Combination, Scenario,
    build_scenarios, make_scenario, render_prompt, swap_room_order, with_honesty_prompt,
)
