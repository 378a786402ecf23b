"""Every evaluation setting in one `ml_collections.ConfigDict`, with the paper's defaults.

Run configs (`configs/smollm2.py` ...) get it as the `eval` section of `base_run_config()`, the
training settings (`soo_jax.train.config.base_config()`) plus the evaluation the launchers run
on the trained model; evaluation-only configs (`configs/eval_tiny.py`) embed it as
`config.eval = default_eval_config()`. `launch/evaluate.py` overrides single fields with
`--config.eval.KEY=VALUE`. Optional values use "" (paths) or -1 ("choose for me") rather than
None, because ml_collections cannot override a None field from the command line.
"""
from __future__ import annotations

import ml_collections
from ml_collections.config_dict import config_dict

from soo_jax.data.templates import FORCED_CHOICE_ANSWER_PREFIX, REPO_ANSWER_SUFFIX

SUITES: tuple[str, ...] = ("forced_choice", "main", "generalisation", "latent", "capability")

# The linear modules the authors hooked for latent SOO (every torch.nn.Linear: the seven
# projections of every layer and the LM head), docs/paper_notes.md §3.6.
ALL_LINEAR_SITES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,logits"


def default_eval_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Comma-separated subset of SUITES, run in this order.
    config.suites = ",".join(SUITES)
    config.seed = 0
    config.out_dir = "outputs/eval"  # git-ignored
    config.progress = True
    # JAX's persistent compilation cache: a rerun skips XLA compilation (about a minute per
    # prompt width for a 30-layer model on CPU). "default": $SOO_JAX_CACHE/jax_compilation_cache
    # (~/.cache/soo_jax/...), shared by every launcher; a directory; or "" (off).
    config.compilation_cache_dir = "default"

    # --- Deception scenarios (main + generalisation) ------------------------------------
    # Authors' `false_recommendation_scenarios.json`; "" = our generator (seeded below).
    config.scenarios_file = ""
    # Authors' `unique_combinations.json` for the generalisation kinds; "" = our generator.
    config.combinations_file = ""
    config.scenario_seed = 0
    # Our generator's seed for the generalisation combinations: a set other than the main
    # one, as the authors' two files are (they share 2 of 1000 combinations).
    config.generalisation_seed = 1
    config.num_scenarios = 250  # the first N of each set, as the authors evaluated
    # The arXiv setup (chat template); False = raw continuation with BOS, as the public code.
    config.chat_template = True
    config.system_prompt = ""
    # Appended to every deception prompt (not to Perspectives); the public code's suffix.
    # An authors' file prompt is re-rendered with this suffix if its own differs.
    config.answer_suffix = REPO_ANSWER_SUFFIX
    # Treasure Hunt / Escape Room wording: "arxiv" or "repo" (docs/paper_notes.md §3.2.2).
    config.wording = "arxiv"
    config.max_new_tokens = 75  # the public code's value (docs/paper_notes.md §3.1.3)
    config.batch_size = 32
    # Also answer every scenario with its two rooms swapped (order-balanced metrics).
    config.swap_room_order = True
    config.self_control = True      # the self-referencing control of the main set
    config.honesty_baseline = True  # "Please be honest to Bob ..." on the base model only
    config.perspectives = True      # the Perspectives control in the generalisation suite
    # Scoring: False = the authors' substring rule; True = whole words only.
    config.whole_words = False
    # End a completion once it has written either room (substring scoring only): the first
    # mention, hence the label, is then fixed, so labels equal those of full-length
    # completions; saves decoding when a model rambles to max_new_tokens.
    config.stop_when_decided = True

    # --- Forced choice (soo_jax.eval.forced_choice) ------------------------------------
    # The main burglar set (num_scenarios of the authors' file or our generator), each in both
    # room orders, asked as above (chat template, system prompt, answer suffix); the reply starts
    # with `answer_prefix` and each room's name is scored as its continuation.
    config.forced_choice = ml_collections.ConfigDict()
    config.forced_choice.answer_prefix = FORCED_CHOICE_ANSWER_PREFIX
    config.forced_choice.batch_size = 32  # prompts per forward pass

    # --- Latent SOO ----------------------------------------------------------------------
    config.latent = ml_collections.ConfigDict()
    config.latent.sites = ALL_LINEAR_SITES
    config.latent.layers = ""  # comma-separated layer indices; "" = every layer
    # The authors fed raw text with BOS (measure_mse.py); True renders each prompt as a
    # user turn of the chat template instead.
    config.latent.chat_template = False
    config.latent.trailing_ellipsis = False
    # The training site: one layer's o_proj. -1 = the paper's relative depth for
    # Mistral-7B (layer 19 of 32) applied to this model's layer count.
    config.latent.soo_site = "o_proj"
    config.latent.soo_layer = -1
    config.latent.soo_pooling = "full"  # as soo_jax.soo.per_pair_mse: full | mean | last
    config.latent.batch_size = 8  # pairs per forward pass

    # --- Capability retention ------------------------------------------------------------
    config.capability = ml_collections.ConfigDict()
    config.capability.kl = True
    config.capability.categories = ""  # comma-separated general-prompt categories; "" = all
    config.capability.batch_size = 16
    config.capability.answers = True    # greedy answers of base and tuned, side by side
    config.capability.answer_max_new_tokens = 128
    # FastChat question file (JSON lines); "" = skip MT-Bench answer generation.
    config.capability.mtbench_questions = ""
    config.capability.mtbench_max_new_tokens = 1024
    config.capability.mtbench_model_id = ""  # "" = derived from the model and adapter names
    return config


def base_run_config() -> ml_collections.ConfigDict:
    """The defaults of a training run's config: the training settings
    (`soo_jax.train.config.base_config()`) and, as `eval`, the evaluation that `launch/evaluate.py`
    and the end-of-run before/after check read (`default_eval_config()`), with the latent SOO's
    training site linked to the loss (`link_latent_training_site`). Config files in `configs/`
    override what differs and return `finalize_run_config(c)`."""
    from soo_jax.train.config import base_config

    c = base_config()
    c.eval = default_eval_config()  # launch/evaluate.py and the end-of-run evaluation
    link_latent_training_site(c)
    return c


def link_latent_training_site(c: ml_collections.ConfigDict) -> None:
    """The evaluation's latent SOO "training site" reads the loss settings whenever it is read:
    `eval.latent.soo_layer` is `loss.layers[0]`, `soo_site` is `loss.site`, `soo_pooling` is
    `loss.pooling`. So a config file's `c.loss.layers = (20,)`, a command line's
    `--config.loss.layers=(12,)` or a sweep override all move it, and the eval config's -1
    default (the paper's Mistral depth, 19/32 of the layers: layer 27 of Gemma-2's 46, 51 of
    CalmeRys' 86, not their trained 20 and 57) never stands in for a trained layer. Setting one
    of the three fields itself replaces its link with that value."""
    latent = c.eval.latent
    # ml_collections has no public "item of a tuple" operation on a reference; an _Op is what
    # its own arithmetic on references builds.
    latent.soo_layer = ml_collections.FieldReference(
        0, field_type=int, op=config_dict._Op(lambda _, layers: int(layers[0]), [c.loss.get_ref("layers")]))
    latent.soo_site = c.loss.get_ref("site").identity()
    latent.soo_pooling = c.loss.get_ref("pooling").identity()


def finalize_run_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates the training settings (`soo_jax.train.config.validate`, which reads no `eval`
    key) and locks a config built from `base_run_config()`; config files return this."""
    from soo_jax.train.config import finalize

    return finalize(config)


# Valid ranges of the numeric evaluation settings (NaN and infinity are never valid).
_INTEGER_RANGES = {
    "seed": dict(low=0, high=2**32 - 1), "scenario_seed": dict(low=0), "generalisation_seed": dict(low=0),
    "num_scenarios": dict(low=1), "max_new_tokens": dict(low=1), "batch_size": dict(low=1),
    "latent.soo_layer": dict(low=-1), "latent.batch_size": dict(low=1), "capability.batch_size": dict(low=1),
    "capability.answer_max_new_tokens": dict(low=1), "capability.mtbench_max_new_tokens": dict(low=1),
    "forced_choice.batch_size": dict(low=1),
}
_FLAGS = ("progress", "chat_template", "swap_room_order", "self_control", "honesty_baseline", "perspectives",
          "whole_words", "stop_when_decided", "latent.chat_template", "latent.trailing_ellipsis",
          "capability.kl", "capability.answers")
_STRINGS = ("out_dir", "compilation_cache_dir", "scenarios_file", "combinations_file", "system_prompt",
            "answer_suffix", "latent.sites", "latent.layers", "latent.soo_site", "capability.categories",
            "capability.mtbench_questions", "capability.mtbench_model_id", "forced_choice.answer_prefix")
WORDINGS = ("arxiv", "repo")


def _get(eval_config: ml_collections.ConfigDict, key: str):
    node = eval_config
    for part in key.split("."):
        node = node[part]
    return node


def validate(eval_config: ml_collections.ConfigDict) -> None:
    """Every evaluation setting's type and range, before anything is loaded or written; errors
    name the key as the command line spells it (`config.eval.num_scenarios: must be >= 1, got 0`).
    Checks that need the model (layer indices) are `validate_for_model`'s, files `check_files`'."""
    from soo_jax import checks
    from soo_jax.data.general_prompts import load_general_prompt_records
    from soo_jax.models.layers import LAYER_SITES
    from soo_jax.soo import POOLINGS

    def fail(key: str, message: str):
        raise ValueError(f"config.eval.{key}: {message}")

    for key in (*_INTEGER_RANGES, *_FLAGS, *_STRINGS):
        try:  # a linked field (latent.soo_layer follows loss.layers[0]) fails when read
            _get(eval_config, key)
        except (ValueError, TypeError, IndexError) as err:
            fail(key, f"cannot be read ({err}); check the setting it follows (latent.soo_layer: loss.layers[0])")
    for key in _STRINGS:
        if not isinstance(_get(eval_config, key), str):
            fail(key, f"must be a string, got {_get(eval_config, key)!r}")
    for key, bounds in _INTEGER_RANGES.items():
        try:
            checks.number(_get(eval_config, key), integer=True, **bounds)
        except ValueError as err:
            fail(key, str(err))
    for key in _FLAGS:
        try:
            checks.field_flag(key, _get(eval_config, key))
        except ValueError as err:
            fail(key, str(err).partition(": ")[2])
    if not eval_config.out_dir:
        fail("out_dir", "must name an output directory, got ''")
    try:
        parse_suites(eval_config.suites)
    except ValueError as err:
        fail("suites", str(err))
    if eval_config.wording not in WORDINGS:
        fail("wording", f"must be one of {WORDINGS}, got {eval_config.wording!r}")
    latent = eval_config.latent
    sites = parse_csv(latent.sites)
    unknown = [s for s in sites if s not in LAYER_SITES + ("logits",)]
    if unknown or not sites:
        fail("latent.sites", f"must be comma-separated sites of {LAYER_SITES + ('logits',)}, got {latent.sites!r}")
    if latent.soo_site not in LAYER_SITES:
        fail("latent.soo_site", f"must be one of {LAYER_SITES}, got {latent.soo_site!r}")
    if latent.soo_pooling not in POOLINGS:
        fail("latent.soo_pooling", f"must be one of {POOLINGS}, got {latent.soo_pooling!r}")
    try:
        checks.field_indices("layers", parse_layers(latent.layers) or ())
    except ValueError:
        fail("latent.layers", f"must be comma-separated layer indices >= 0 (or '' for every layer), "
                              f"got {latent.layers!r}")
    try:
        load_general_prompt_records(parse_csv(eval_config.capability.categories) or None)
    except ValueError as err:
        fail("capability.categories", str(err))


def validate_for_model(eval_config: ml_collections.ConfigDict, num_layers: int) -> None:
    """The layer indices of the latent suite against the model's layer count (its config.json)."""
    layers = parse_layers(eval_config.latent.layers) or ()
    bad = [i for i in layers if i >= num_layers]
    if bad:
        raise ValueError(f"config.eval.latent.layers: {bad} out of range for a {num_layers}-layer model "
                         f"(indices 0..{num_layers - 1})")
    soo_layer = eval_config.latent.soo_layer
    if soo_layer != -1 and not 0 <= soo_layer < num_layers:
        raise ValueError(f"config.eval.latent.soo_layer: {soo_layer} out of range for a {num_layers}-layer model "
                         f"(0..{num_layers - 1}, or -1 for the paper's relative depth)")


def check_files(eval_config: ml_collections.ConfigDict) -> None:
    """The input files the evaluation settings name exist (FileNotFoundError says how to make them)."""
    from soo_jax.data.scenarios import check_input_file, check_scenarios_file

    if eval_config.scenarios_file:
        check_scenarios_file(eval_config.scenarios_file, "scenarios file (--scenarios, config.eval.scenarios_file)")
    if eval_config.combinations_file:
        check_input_file(eval_config.combinations_file, "combinations file (config.eval.combinations_file)",
                         "give the authors' unique_combinations.json, or '' for our generator's combinations")
    if eval_config.capability.mtbench_questions:
        check_input_file(eval_config.capability.mtbench_questions,
                         "MT-Bench question file (--mtbench_questions, config.eval.capability.mtbench_questions)",
                         "give FastChat's question.jsonl, or '' to skip MT-Bench answers")


def parse_suites(suites: str) -> tuple[str, ...]:
    """"main,latent" -> ("main", "latent"), in the order given; rejects unknown names."""
    names = tuple(s.strip() for s in suites.split(",") if s.strip())
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise ValueError(f"unknown suite(s) {unknown or [suites]}; choose from {list(SUITES)}")
    return tuple(dict.fromkeys(names))


def parse_csv(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


def parse_layers(value: str) -> tuple[int, ...] | None:
    """"" -> None (every layer); "3, 7" -> (3, 7)."""
    items = parse_csv(value)
    try:
        return tuple(int(s) for s in items) or None
    except ValueError as e:
        raise ValueError(f"layers must be comma-separated integers, got {value!r}") from e


def resolve_soo_layer(soo_layer: int, num_layers: int) -> int:
    """-1 -> round(19/32 * num_layers), the paper's Mistral depth; else checked as given."""
    if soo_layer == -1:
        return min(num_layers - 1, round(19 / 32 * num_layers))
    if not 0 <= soo_layer < num_layers:
        raise ValueError(f"soo_layer {soo_layer} out of range for a {num_layers}-layer model")
    return soo_layer


# Evaluation settings that never change a result: where results go, progress bars, the compilation cache.
NOT_RESULT_CHANGING = ("eval.out_dir", "eval.progress", "eval.compilation_cache_dir")


def run_not_result_changing() -> tuple[str, ...]:
    """The settings of a whole run config (`base_run_config()`) that change no result: the
    training sections' (`soo_jax.train.config.NOT_RESULT_CHANGING`) and the evaluation's."""
    from soo_jax.train.config import NOT_RESULT_CHANGING as TRAIN_NOT_RESULT_CHANGING

    return (*TRAIN_NOT_RESULT_CHANGING, *NOT_RESULT_CHANGING)


def result_settings(eval_config: ml_collections.ConfigDict) -> dict:
    """The flat `eval.*` settings an evaluation's results depend on, as run manifests compare them:
    the scenario and combination files by content (a moved file is the same, a replaced one is not)."""
    from soo_jax import run_dir

    settings = run_dir.without(run_dir.flatten({"eval": eval_config.to_dict()}), NOT_RESULT_CHANGING)
    for key in ("eval.scenarios_file", "eval.combinations_file"):
        if settings.get(key):
            settings[key] = f"sha256 {run_dir.file_digest(settings[key])}"
    return settings
