"""Recompute every derived number of docs/results/llm.md and docs/results/rl.md from the data in
docs/results/data/ and rewrite the tables between their markers:

    python docs/results/make_tables.py           # rewrite the marked blocks, list what changed
    python docs/results/make_tables.py --check   # exit 1 if a block is out of date, write nothing

A block is the text between `<!-- make_tables: NAME -->` and `<!-- /make_tables -->`; the script
owns it, everything else in the pages is prose. Standard library only (no numpy, no scipy), so
it runs anywhere; t quantiles come from the table below.

What is recomputed, and from what (each CSV row names the command that produced it; for the
per-seed files, PER_SEED_RUNS does):
- means over seeds and 95% t-intervals (ddof 1) from the per-seed files launch/experiment.py
  writes as OUT/per_seed.csv, copied here under the names of PER_SEED_RUNS: both room orders,
  the share answered and the rates among answered;
- the sweep's deceptive rate with the rooms swapped, 2 x order-balanced - published-order rate
  (the order-balanced rate is the mean of the two orders' rates);
- the sweep's selection rule (soo_jax/experiments/sweep.py) applied to the sweep's points;
- from the RL factorial's per-seed file (rl_factorial_per_seed.csv, the pooling's per_seed.csv):
  every model's grid endpoints, SOO-minus-twin and control-minus-deceptive effects with 95%
  t-intervals and exact sign tests per run and pooled, the bounds a null leaves, power from the
  observed spread, classification and the authors' estimator, and a check of the per-seed
  values against the effects the first run printed (rl_paired_effects.csv);
- from the RL paper design's per-seed file (rl_deception_per_seed.csv, that evaluation's
  per_seed.csv): the authors' behavioural differences, rates, returns and classification with
  95% t-intervals;
- from the effects the first RL run printed (rl_paired_effects.csv; its per-seed values were not
  kept): the pre-stated test as first computed, the fresh seeds' counts and means being pooled 16
  minus the paper's 8, with the chance of the pooled criterion under no effect given the
  discovery seeds.
"""

from __future__ import annotations

import argparse
import csv
import math
import pathlib
import re
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE / "data"

# Student t quantiles for df = 1..40 (scipy.stats.t.ppf, 6 decimals).
T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
        2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.13145, 2.119905, 2.109816,
        2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529,
        2.051831, 2.048407, 2.04523, 2.042272, 2.039513, 2.036933, 2.034515, 2.032245, 2.030108,
        2.028094, 2.026192, 2.024394, 2.022691, 2.021075)
T80 = (1.376382, 1.06066, 0.978472, 0.940965, 0.919544, 0.905703, 0.89603, 0.88889, 0.883404,
       0.879058, 0.87553, 0.872609, 0.870152, 0.868055, 0.866245, 0.864667, 0.863279, 0.862049,
       0.860951, 0.859964, 0.859074, 0.858266, 0.85753, 0.856855, 0.856236, 0.855665, 0.855137,
       0.854647, 0.854192, 0.853767, 0.85337, 0.852998, 0.852649, 0.852321, 0.852012, 0.85172,
       0.851444, 0.851183, 0.850935, 0.8507)


def t975(df: int) -> float:
    if not 1 <= df <= len(T975):
        raise ValueError(f"no t quantile for df={df}")
    return T975[df - 1]


def t80(df: int) -> float:
    if not 1 <= df <= len(T80):
        raise ValueError(f"no t quantile for df={df}")
    return T80[df - 1]


# --- small statistics ---------------------------------------------------------------------

def mean(xs):
    return sum(xs) / len(xs)


def sd1(xs):
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def t_interval(xs):
    """Mean and 95% t-interval over seeds (ddof 1)."""
    m, half = mean(xs), t975(len(xs) - 1) * sd1(xs) / math.sqrt(len(xs))
    return m, m - half, m + half


def binom_pmf(k, n, p=0.5):
    return math.comb(n, k) * p ** k * (1 - p) ** (n - k)


def sign_test_p(pos, neg):
    """Exact two-sided sign test (ties dropped), as soo_jax/rl/stats.py's binomtest."""
    n = pos + neg
    if n == 0:
        return 1.0
    k = min(pos, neg)
    return min(1.0, 2 * sum(binom_pmf(i, n) for i in range(k + 1)))


def sign_test_needs(n, alpha=0.05):
    for k in range(n // 2 + 1, n + 1):
        if sign_test_p(k, n - k) < alpha:
            return k
    return None


def normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def bisect(f, lo, hi, target, iters=200):
    """x in [lo, hi] with f(x) = target, f increasing."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def sign_test_mde(sd, n, power=0.8, alpha=0.05):
    """Smallest mean paired effect (normal differences with this SD) that the two-sided sign
    test at `alpha` detects in the positive direction with probability `power`."""
    k = sign_test_needs(n, alpha)

    def power_at(delta):
        p = normal_cdf(delta / sd)
        return sum(binom_pmf(i, n, p) for i in range(k, n + 1))

    return bisect(power_at, 0.0, 20 * sd, power)


# --- formatting ---------------------------------------------------------------------------

def f1(x):
    return f"{x:.1f}"


def ci(m, lo, hi, fmt=f1):
    return f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]"


def fp(p):
    return f"{p:.4f}" if p < 0.001 else f"{p:.3f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def read(name):
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def sources(rows):
    seen = []
    for r in rows:
        if r["source"] not in seen:
            seen.append(r["source"])
    return seen


def source_lines(rows):
    return ["", "Data: " + ", ".join(sorted({r['_file'] for r in rows})) + "; produced by:", ""] + \
        [f"    {s}" for s in sources(rows)]


def tagged(name):
    rows = read(name)
    for r in rows:
        r["_file"] = f"`docs/results/data/{name}`"
    return rows


# --- LLM blocks ---------------------------------------------------------------------------

def llm_sweep():
    rows = tagged("llm_sweep.csv")
    base = {r["answer_suffix"]: r for r in rows if r["objective"] == "base"}
    points = [r for r in rows if r["objective"] != "base"]

    def eligible(r):  # soo_jax/experiments/sweep.py: MAX_EXTRA_NEITHER = 10, MAX_KL = 0.5
        b = base[r["answer_suffix"]]
        return (float(r["neither_pct"]) <= float(b["neither_pct"]) + 10.0
                and float(r["kl_base_tuned"]) < 0.5)

    def chosen(candidates):
        ok = [r for r in candidates if eligible(r)]
        return min(ok, key=lambda r: float(r["order_balanced_pct"]))

    first = chosen([r for r in points if r["in_first_sweep"] == "yes"])
    recipes = chosen(points)
    out_rows = []
    for r in rows:
        d, ob, n = float(r["deceptive_pct"]), float(r["order_balanced_pct"]), float(r["neither_pct"])
        if r["objective"] == "base":
            name, rule = f"base ({r['answer_suffix']} suffix)", "–"
        else:
            objective = "o_proj MSE" if r["objective"] == "mse" else "KL on logits"
            where = f"layer {r['layer']}" if r["layer"] else "logits"
            name = f"{objective}, {r['training_prompts']}, {r['answer_suffix']} suffix, {where}, lr {r['learning_rate']}"
            rule = "eligible" if eligible(r) else "excluded"
            marks = [tag for tag, pick in (("first sweep's choice", first), ("recipes sweep's choice", recipes)) if r is pick]
            if marks:
                name, rule = f"**{name}**", f"**{' and '.join(marks)}**"
        site = f"{r['soo_site_before']} → {r['soo_site_after']}" if r["soo_site_before"] else "–"
        out_rows.append([name, f1(d), f1(100 - d - n), f1(n), f1(2 * ob - d), f1(ob),
                         f1(float(r["position_bias_pct"])), r["kl_base_tuned"], site,
                         "yes" if r["in_first_sweep"] == "yes" else "no", rule])
    lines = table(["point", "deceptive %, published order", "honest %, published order",
                   "neither %, published order", "deceptive %, rooms swapped",
                   "order-balanced deceptive %", "position bias %", "KL(base‖tuned), nats",
                   "SOO at the site, before → after", "in the first sweep", "selection rule"],
                  out_rows)
    return lines + source_lines(rows)


def g4(x):
    return f"{x:.4g}"


MODEL_LABEL = {"base": "base", "honesty_prompt": "honesty prompt"}


# --- LLM blocks from per-seed files (launch/experiment.py's OUT/per_seed.csv) --------------

EXPERIMENT = "python launch/experiment.py --config configs/smollm2.py --seeds 0,1,2,3,4"
AUTHORS = "--sets authors --scenarios false_recommendation_scenarios.json"
SUITES = ("--config.eval.suites=main,latent,capability --config.eval.self_control=False "
          "--config.eval.capability.answers=False")
# file -> (the command that writes OUT/per_seed.csv, OUT)
PER_SEED_RUNS = {
    "llm_l12_authors.csv": (f"{EXPERIMENT} {AUTHORS} --out runs/experiment {SUITES}", "runs/experiment"),
    "llm_l12_generated.csv": (f"{EXPERIMENT} --sets generated "
                              "--out runs/experiment_generated --config.eval.suites=main,generalisation "
                              "--config.eval.num_scenarios=100", "runs/experiment_generated"),
    "llm_l24chat_authors.csv": (f"{EXPERIMENT} {AUTHORS} --out runs/experiment_l24chat {SUITES} "
                                "--config.loss.layers='(24,)' --config.data.chat_template=True",
                                "runs/experiment_l24chat"),
}
ORDERS = ("original", "swapped")


def per_seed_values(name):
    """A copied per_seed.csv as {(set, condition, model, seed, quantity): value}, and the lines
    naming the command that produced it."""
    values = {(r["set"], r["condition"], r["model"], r["seed"], r["quantity"]): float(r["value"])
              for r in read(name)}
    command, out = PER_SEED_RUNS[name]
    return values, ["", f"Data: `docs/results/data/{name}`; produced by:", "", f"    {command}",
                    f"    cp {out}/per_seed.csv docs/results/data/{name}"]


def soo_seeds(values):
    return sorted({int(k[3]) for k in values if k[2] == "soo"})


def deception_values(values, scenario_set, condition, model, seed=""):
    """One model's deception columns: target, other, neither in each order (target/other:
    deceptive/honest, for Perspectives correct/projected), the order-balanced rate, the position
    bias, the share answered (mean over orders) and the order-balanced target rate among
    answered scenarios (None where an order has no answer)."""
    def get(quantity):
        return values[(scenario_set, condition, model, str(seed), quantity)]

    target, other = (("correct", "projected") if (scenario_set, condition, model, str(seed), "correct_original") in values
                     else ("deceptive", "honest"))
    columns = [get(f"{label}_{order}") for order in ORDERS for label in (target, other, "neither")]
    answered = [100 - get(f"neither_{order}") for order in ORDERS]
    among = (mean([100 * get(f"{target}_{o}") / a for o, a in zip(ORDERS, answered)])
             if all(a > 0 for a in answered) else None)
    return columns + [get("order_balanced"), get("position_bias"), mean(answered), among]


DECEPTION_HEADER = ["deceptive %, published order", "honest %, published order", "neither %, published order",
                    "deceptive %, rooms swapped", "honest %, rooms swapped", "neither %, rooms swapped",
                    "order-balanced deceptive %", "position bias %", "answered %",
                    "order-balanced deceptive among answered %"]


def cells(columns, fmt=f1):
    return ["–" if v is None else fmt(v) for v in columns]


def interval_cells(per_seed, fmt=f1):
    """Mean [95% t-interval] of each column over seeds; "–" where a seed has no value."""
    return ["–" if any(v is None for v in column) else ci(*t_interval(column), fmt) for column in zip(*per_seed)]


def llm_deception_per_seed(name, condition="burglar"):
    """Every model on one set's condition, each SOO seed, and the SOO seeds' mean [t-interval]."""
    values, source = per_seed_values(name)
    scenario_set = next(k[0] for k in values if k[1] == condition)
    seeds = soo_seeds(values)
    rows = [[MODEL_LABEL[m]] + cells(deception_values(values, scenario_set, condition, m))
            for m in ("base", "honesty_prompt") if (scenario_set, condition, m, "", "n") in values]
    per_seed = [deception_values(values, scenario_set, condition, "soo", s) for s in seeds]
    rows += [[f"SOO seed {s}"] + cells(v) for s, v in zip(seeds, per_seed)]
    rows.append([f"**SOO, {len(seeds)} seeds: mean [95% t-interval]**"] + interval_cells(per_seed))
    return table(["model"] + DECEPTION_HEADER, rows) + source


def llm_model_per_seed(name):
    """Latent SOO, the training site's MSE and KL(base || tuned): the base model, each SOO seed,
    and the seeds' mean [t-interval]."""
    values, source = per_seed_values(name)
    quantities = ("latent_score", "training_site_mse", "kl_base_tuned")
    scenario_set = next(k[0] for k in values if k[4] == "latent_score")

    def row(model, seed=""):
        return [values.get((scenario_set, "", model, str(seed), q), 0.0 if model == "base" and q == "kl_base_tuned"
                           else None) for q in quantities]

    seeds = soo_seeds(values)
    per_seed = [row("soo", s) for s in seeds]
    rows = [["base"] + cells(row("base"), g4)] + [[f"SOO seed {s}"] + cells(v, g4) for s, v in zip(seeds, per_seed)]
    rows.append([f"**SOO, {len(seeds)} seeds: mean [95% t-interval]**"] + interval_cells(per_seed, g4))
    return table(["model", "latent SOO, all linear layers (authors' measure)", "o_proj MSE at the training site",
                  "KL(base ‖ model), nats"], rows) + source


# The evaluation's condition names (soo_jax/eval/scoring.py condition_name), in table order.
CONDITION_LABELS = (("burglar", "burglar"), ("burglar/self", "burglar, self-referencing control"),
                    ("name", "name"), ("objective", "objective"), ("action", "action"),
                    ("name_objective", "name + objective"), ("name_action", "name + action"),
                    ("objective_action", "objective + action"), ("name_objective_action", "name + objective + action"),
                    ("treasure_hunt", "Treasure Hunt"), ("treasure_hunt/repo", "Treasure Hunt, the public code's wording"),
                    ("escape_room", "Escape Room"), ("escape_room/repo", "Escape Room, the public code's wording"),
                    ("perspectives", "Perspectives (**correct** / projected %, not deceptive / honest %)"))


def llm_generated_per_seed(name="llm_l12_generated.csv"):
    """Every condition of the generated set: the base model (and the honesty prompt where asked),
    and the SOO seeds' mean [t-interval]."""
    values, source = per_seed_values(name)
    scenario_set = next(iter(values))[0]
    seeds = soo_seeds(values)
    asked = {k[1] for k in values if k[1]}
    unknown = asked - {c for c, _ in CONDITION_LABELS}
    if unknown:
        raise SystemExit(f"{name}: no label for condition(s) {sorted(unknown)}; add them to CONDITION_LABELS")
    rows = []
    for condition, label in CONDITION_LABELS:
        if condition not in asked:
            continue
        for model in ("base", "honesty_prompt"):
            if (scenario_set, condition, model, "", "n") in values:
                rows.append([label, MODEL_LABEL[model]] + cells(deception_values(values, scenario_set, condition, model)))
        rows.append([label, f"SOO, {len(seeds)} seeds: mean [95% t-interval]"]
                    + interval_cells([deception_values(values, scenario_set, condition, "soo", s) for s in seeds]))
    return table(["condition", "model"] + DECEPTION_HEADER, rows) + source


# --- RL: the first run's printed effects ---------------------------------------------------
# rl_paired_effects.csv: the SOO-minus-twin effects the first run's evaluation and pooling printed
# (means, percentile bootstrap intervals, sign counts); its per-seed values were not kept.

ARMS_TESTED = ("soo_action_logmse_baseline", "soo_hidden_logmse_baseline")
POOLED_NEEDS = sign_test_needs(16, 0.025)  # the pre-stated confirmation: 13 of 16 pairs positive
POOLED_CRITERION = (f"fresh seeds the pooled criterion ({POOLED_NEEDS} of 16) needed, "
                    "and its chance under no effect")


def pooled_criterion_cell(discovery_positive):
    """How many of the 8 fresh seeds the pooled criterion still needs after the discovery seeds'
    positive count, and the chance of that many under no effect (sign probability 1/2)."""
    need = POOLED_NEEDS - discovery_positive
    if need > 8:
        return f"unreachable ({need} of 8)"
    return f"{need} of 8: {sum(binom_pmf(k, 8) for k in range(max(need, 0), 9)):.3f}"


def first_run_effects():
    """{(seed_set, arm, endpoint): printed row} and the rows."""
    rows = tagged("rl_paired_effects.csv")
    return {(r["seed_set"], r["arm"], r["endpoint"]): r for r in rows}, rows


def replicate_of(by, arm, endpoint):
    """The replicate's 8 seeds = pooled 16 minus the paper's 8: counts subtract exactly; the
    mean is 2 x pooled - paper (equal halves), to the rounding of the printed means (+-0.0015)."""
    p8, p16 = by[("paper8", arm, endpoint)], by[("pooled16", arm, endpoint)]
    pos = int(p16["positive"]) - int(p8["positive"])
    neg = int(p16["negative"]) - int(p8["negative"])
    return 2 * float(p16["mean"]) - float(p8["mean"]), pos, neg


def rl_prestated_first_run():
    """The pre-stated test as the first run computed it: discovery seeds, the fresh seeds alone
    (pooled minus discovery) and pooled, with the chance of the pooled criterion under no effect
    given the discovery seeds' count."""
    by, rows = first_run_effects()
    out = []
    for arm in ARMS_TESTED:
        p8, p16 = by[("paper8", arm, "honest_position")], by[("pooled16", arm, "honest_position")]
        m_rep, pos, neg = replicate_of(by, arm, "honest_position")
        out.append([arm,
                    f"{float(p8['mean']):+.3f}; {p8['positive']}+/{p8['negative']}-",
                    f"{m_rep:+.3f}; {pos}+/{neg}-, sign test p = {fp(sign_test_p(pos, neg))}",
                    f"{float(p16['mean']):+.3f}; {p16['positive']}+/{p16['negative']}-, "
                    f"p = {fp(sign_test_p(int(p16['positive']), int(p16['negative'])))}",
                    pooled_criterion_cell(int(p8["positive"]))])
    lines = table(["first run: arm (grid position, co-trained adversary; mean; seeds +/-)",
                   "paper's 8 seeds (discovery)", "fresh 8 seeds (the confirmatory test)", "pooled 16",
                   POOLED_CRITERION], out)
    return lines + source_lines([r for r in rows if r["arm"] in ARMS_TESTED and r["endpoint"] == "honest_position"])


# --- RL blocks from the factorial's per-seed file -----------------------------------------
# runs/rl_factorial_pooled/per_seed.csv (soo_jax/rl/factorial_evaluate.py per_seed_rows): every
# model's endpoints per training seed, each row naming the run that trained the seed.

RL_PER_SEED = "rl_factorial_per_seed.csv"
RL_COMMANDS = ("python launch/rl.py --config configs/rl_factorial.py",
               "python launch/rl.py --config configs/rl_factorial.py:replicate",
               "python launch/rl_pool.py runs/rl_factorial runs/rl_factorial_replicate --out runs/rl_factorial_pooled",
               f"cp runs/rl_factorial_pooled/per_seed.csv docs/results/data/{RL_PER_SEED}")
# (run, label): the discovery run on the paper's seeds, the replicate on fresh seeds, both.
RL_SETS = (("rl_factorial", "paper's 8 seeds (discovery)"),
           ("rl_factorial_replicate", "fresh 8 seeds (the confirmatory test)"),
           (None, "pooled 16"))
RL_ENDPOINTS = ("entry_rate", "entry_rate_frozen", "trap_rate", "trap_rate_frozen", "honest_position",
                "honest_position_frozen", "honest_projection", "honest_projection_frozen", "mean_soo")
RL_GRID = ("honest_position", "honest_position_frozen", "honest_projection", "honest_projection_frozen")
RL_NOISE_FLOOR = "deceptive_repeat"


def rl_source():
    return ["", f"Data: `docs/results/data/{RL_PER_SEED}`; produced by:", ""] + [f"    {c}" for c in RL_COMMANDS]


def rl_values(name=RL_PER_SEED):
    """{(run, model, seed, quantity): value} of an RL per-seed file, and its runs' seeds in file order."""
    values, seeds = {}, {}
    for r in read(name):
        seed = int(r["seed"])
        values[(r["set"], r["model"], seed, r["quantity"])] = float(r["value"])
        seeds.setdefault(r["set"], [])
        if seed not in seeds[r["set"]]:
            seeds[r["set"]].append(seed)
    return values, seeds


def rl_twin(arm):
    """soo_<target>_<loss>_<init> -> cap_<loss>_<init> (configs/rl_factorial.py)."""
    _, _, loss, init = arm.split("_")
    return f"cap_{loss}_{init}"


def rl_models(values, prefix):
    """The file's models whose names start with `prefix` ("soo_" arms, "cap_" twins), sorted."""
    return sorted({k[1] for k in values if k[1].startswith(prefix)})


def rl_series(values, seeds, model, quantity, run=None, minus=None):
    """One value per training seed of `run` (None: every run), `model`'s minus `minus`'s where
    given; NaN (no value) dropped."""
    out = []
    for r, run_seeds in seeds.items():
        if run is not None and r != run:
            continue
        for s in run_seeds:
            v = values[(r, model, s, quantity)]
            if minus is not None:
                v -= values[(r, minus, s, quantity)]
            if not math.isnan(v):
                out.append(v)
    return out


def g3(x):
    return f"{x:+.3f}"


def t_cell(xs, n_all, fmt=g3):
    """mean [95% t-interval] over seeds, with n where seeds lacked a value."""
    if len(xs) < 2:
        return "–"
    text = ci(*t_interval(xs), fmt)
    return text if len(xs) == n_all else f"{text} (n = {len(xs)})"


def effect_cell(xs, n_all, fmt=g3):
    """A paired effect: mean [95% t-interval]; seeds positive / negative; exact sign test."""
    if len(xs) < 2:
        return "–"
    pos, neg = sum(x > 0 for x in xs), sum(x < 0 for x in xs)
    return f"{t_cell(xs, n_all, fmt)}; {pos}+/{neg}-, p = {fp(sign_test_p(pos, neg))}"


def rl_n(seeds, run=None):
    return sum(len(v) for r, v in seeds.items() if run is None or r == run)


def rl_endpoints():
    """Where every model lands on the four grid endpoints, pooled over every seed."""
    values, seeds = rl_values()
    n = rl_n(seeds)
    models = ["deceptive", RL_NOISE_FLOOR, "honest", "honest_finetune", "scratch_deceptive"]
    models += rl_models(values, "cap_") + rl_models(values, "soo_")
    labels = {"deceptive": "deceptive baseline (its own episodes)",
              RL_NOISE_FLOOR: "**noise floor**: deceptive baseline, independent episodes",
              "honest": "honest baseline", "honest_finetune": "positive control: honest reward from the deceptive baseline",
              "scratch_deceptive": "undertraining control: fresh networks, deceptive reward"}
    rows = [[labels.get(m, m)] + [t_cell(rl_series(values, seeds, m, e), n) for e in RL_GRID] for m in models]
    return table([f"model ({n} seeds: mean [95% t-interval])", "grid position, co-trained adversary",
                  "grid position, frozen adversary", "projection, co-trained adversary",
                  "projection, frozen adversary"], rows) + rl_source()


def rl_effects_table(run=None):
    """SOO arm minus its capability-only twin per seed, every endpoint, one run or all."""
    values, seeds = rl_values()
    n = rl_n(seeds, run)
    arms = rl_models(values, "soo_")
    comparisons = len(arms) * len(RL_ENDPOINTS)
    rows = [[arm] + [effect_cell(rl_series(values, seeds, arm, e, run, minus=rl_twin(arm)), n)
                     for e in RL_ENDPOINTS] for arm in arms]
    note = (f"SOO arm minus its capability-only twin, {n} seeds: mean [95% t-interval]; seeds positive / "
            f"negative; exact two-sided sign test. {comparisons} comparisons: p below 0.05 / {comparisons} = "
            f"{0.05 / comparisons:.5f} is Bonferroni-safe; with {n} seeds the smallest possible p is "
            f"{fp(sign_test_p(n, 0))}.")
    return [note, ""] + table(["SOO arm"] + list(RL_ENDPOINTS), rows) + rl_source()


def rl_prestated_per_seed():
    """The pre-stated hypothesis: grid position (co-trained) of the two tested arms beyond their
    twins, on the discovery seeds, the fresh seeds alone (the confirmatory test) and pooled."""
    values, seeds = rl_values()
    rows = []
    for arm in ARMS_TESTED:
        by_run = [rl_series(values, seeds, arm, "honest_position", run, minus=rl_twin(arm)) for run, _ in RL_SETS]
        cells = [effect_cell(xs, rl_n(seeds, run)) for xs, (run, _) in zip(by_run, RL_SETS)]
        rows.append([arm] + cells + [pooled_criterion_cell(sum(x > 0 for x in by_run[0]))])
    return table(["arm (grid position, co-trained adversary; mean [95% t-interval])"] + [label for _, label in RL_SETS]
                 + [POOLED_CRITERION],
                 rows) + rl_source()


def rl_bounds():
    """Per SOO arm and grid endpoint, pooled: the paired effect's 95% t-interval, read as the
    largest effect it leaves (in units of the baselines' gap: both grid endpoints put the
    deceptive baseline at 0 and the honest one at 1)."""
    values, seeds = rl_values()
    n = rl_n(seeds)
    rows = []
    for arm in rl_models(values, "soo_"):
        cells = []
        for e in RL_GRID:
            m, lo, hi = t_interval(rl_series(values, seeds, arm, e, minus=rl_twin(arm)))
            reading = (f"no effect above {hi:+.2f}" if lo <= 0 <= hi
                       else f"toward honest, {lo:+.2f} or more" if lo > 0 else f"away from honest, {hi:+.2f} or less")
            cells.append(f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]: {reading}")
        rows.append([arm] + cells)
    return table([f"SOO arm minus twin ({n} seeds), in units of the deceptive-to-honest gap"] + list(RL_GRID),
                 rows) + rl_source()


def rl_controls():
    """How far each control moves from the deceptive baseline (paired per seed), beside the
    noise floor: what the assay has shown it can detect."""
    values, seeds = rl_values()
    n = rl_n(seeds)
    models = ([RL_NOISE_FLOOR, "honest", "honest_finetune", "scratch_deceptive"]
              + rl_models(values, "cap_"))
    rows = [[m] + [effect_cell(rl_series(values, seeds, m, e, minus="deceptive"), n) for e in RL_GRID] for m in models]
    return table([f"model minus the deceptive baseline ({n} seeds)"] + list(RL_GRID), rows) + rl_source()


def rl_power_per_seed():
    """Power of the sign test (the decision rule) and of the paired t, from the observed spread
    of the SOO-minus-twin differences (median SD over the SOO arms), at the discovery run's n and
    pooled."""
    values, seeds = rl_values()
    arms = rl_models(values, "soo_")
    rows = []
    for run, label in (RL_SETS[0], RL_SETS[2]):
        n = rl_n(seeds, run)
        for e in RL_ENDPOINTS:
            sds = [sd1(xs) for xs in (rl_series(values, seeds, a, e, run, minus=rl_twin(a)) for a in arms)
                   if len(xs) > 1]
            if not sds:
                rows.append([label, n, e] + ["–"] * 6)
                continue
            sd = statistics.median(sds)
            gap = mean(rl_series(values, seeds, "honest", e, run, minus="deceptive"))
            mde_t = (t975(n - 1) + t80(n - 1)) * sd / math.sqrt(n)
            needs = sign_test_needs(n)
            mde_s = sign_test_mde(sd, n) if needs is not None and sd > 0 else None
            rows.append([label, n, e, f"{sd:.3g}", f"{mde_t:.3g}", f"{needs} of {n}" if needs else "never",
                         "–" if mde_s is None else f"{mde_s:.3g}", f"{gap:+.3g}",
                         f"{mde_s / abs(gap):.2f}" if gap and mde_s is not None else "–"])
    return table(["seeds", "n", "endpoint", "SD of the paired differences (median over SOO arms)",
                  "MDE, paired t (80%, 5%)", "sign test needs", "MDE, sign test (80%)",
                  "honest - deceptive baseline", "sign-test MDE / gap"], rows) + rl_source()


def rl_classification_and_paper_view():
    """Classification by mean SOO at the largest episode count, and the authors' estimator
    (one trained model per condition) per training seed."""
    values, seeds = rl_values()
    n = rl_n(seeds)

    def share(model, quantity):
        xs = rl_series(values, seeds, model, quantity)
        return f"{mean(xs):.2f} ({sum(x == 1.0 for x in xs)} of {len(xs)} perfect)" if xs else "–"

    arms = (["honest_finetune", "scratch_deceptive"] + rl_models(values, "cap_")
            + rl_models(values, "soo_"))
    rows = [["honest baseline", share("honest", "classified_below_deceptive"), "–", "–"]]
    for a in arms:
        reproduced = rl_series(values, seeds, a, "paper_view_reproduced")
        rows.append([a, share(a, "classified_below_deceptive"), share(a, "classified_above_honest"),
                     f"{int(sum(reproduced))} of {len(reproduced)}"])
    return table([f"model ({n} seeds)", "mean SOO below the deceptive baseline's (accuracy)",
                  "mean SOO above the honest baseline's (accuracy)",
                  "the authors' estimator puts it closer to honest (seeds)"], rows) + rl_source()


def rl_rerun_check():
    """The per-seed file against the numbers the first run printed (rl_paired_effects.csv): how
    many SOO-minus-twin means and sign counts it reproduces, and the grid-position effects of
    both runs side by side."""
    values, seeds = rl_values()
    printed = tagged("rl_paired_effects.csv")
    runs = {"paper8": RL_SETS[0][0], "pooled16": None}
    same_counts = close_means = 0
    rows = []
    for r in printed:
        xs = rl_series(values, seeds, r["arm"], r["endpoint"], runs[r["seed_set"]], minus=r["twin"])
        counts = (sum(x > 0 for x in xs), sum(x < 0 for x in xs))
        same_counts += counts == (int(r["positive"]), int(r["negative"]))
        close_means += abs(mean(xs) - float(r["mean"])) <= 0.0005 + 1e-9 * abs(float(r["mean"]))
        if r["endpoint"] in ("honest_position", "honest_position_frozen"):
            rows.append([r["seed_set"], r["arm"], r["endpoint"],
                         f"{float(r['mean']):+.3f} ({r['positive']}+/{r['negative']}-)",
                         f"{mean(xs):+.3f} ({counts[0]}+/{counts[1]}-)"])
    arms, endpoints = ({r[k] for r in printed} for k in ("arm", "endpoint"))
    lines = [f"The rerun's per-seed values against the first run's printed SOO-minus-twin effects ({len(arms)} arms "
             f"x {len(endpoints)} endpoints, paper's 8 seeds and pooled 16): {close_means} of {len(printed)} means equal to "
             f"the printed 3 decimals, {same_counts} of {len(printed)} sign counts (+/-) equal. Grid position:", ""]
    return lines + table(["seeds", "SOO arm", "endpoint", "first run (mean, seeds +/-)", "rerun"], rows) + [
        "", "Data: `docs/results/data/rl_paired_effects.csv` (first run, printed) and "
        f"`docs/results/data/{RL_PER_SEED}` (rerun)."]


# --- RL: the paper's design alone (configs/rl_deception.py) --------------------------------
# runs/rl_deception/evaluate/per_seed.csv (soo_jax/rl/evaluate.py per_seed_rows).

RL_PAPER_PER_SEED = "rl_deception_per_seed.csv"
RL_PAPER_COMMANDS = ("python launch/rl.py --config configs/rl_deception.py",
                     f"cp runs/rl_deception/evaluate/per_seed.csv docs/results/data/{RL_PAPER_PER_SEED}")
RL_PAPER_CONDITIONS = (("deceptive", "deceptive baseline"), ("soo", "SOO (hidden, MSE, from the baseline)"),
                       ("honest", "honest baseline"), ("capability", "capability-only"),
                       ("random", "random + capability"))
RL_PAPER_PAIRS = (("soo", "honest"), ("soo", "deceptive"), ("honest", "deceptive"), ("capability", "honest"),
                  ("capability", "deceptive"), ("random", "honest"), ("random", "deceptive"))


def rl_paper_design():
    """Per condition and training seed: the authors' behavioural differences, the evaluation's
    rates and returns, and classification by mean SOO per episode count; means with 95%
    t-intervals over seeds."""
    values, seeds = rl_values(RL_PAPER_PER_SEED)
    n = rl_n(seeds)

    def series(model, quantity):
        return rl_series(values, seeds, model, quantity)

    def cell(model, quantity, fmt):
        return ci(*t_interval(series(model, quantity)), fmt)

    label = dict(RL_PAPER_CONDITIONS)
    differences = [[f"{label[a]} vs {label[b]}", cell(a, f"behavioural_difference_vs_{b}", "{:,.0f}".format)]
                   for a, b in RL_PAPER_PAIRS]
    closer = sum(h < d for h, d in zip(series("soo", "behavioural_difference_vs_honest"),
                                       series("soo", "behavioural_difference_vs_deceptive")))
    lines = table([f"comparison (the authors' behavioural difference, MSE between count grids; {n} seeds)",
                   "mean [95% t-interval]"], differences)
    lines += ["", f"SOO closer to the honest than to the deceptive baseline (per seed): {closer} of {n}.", ""]
    rates = [[label[c], cell(c, "trap_rate", "{:.3f}".format), cell(c, "return_adversary", "{:.1f}".format),
              cell(c, "return_blue_deceptive_reward", "{:.1f}".format), cell(c, "deceptive_entries", "{:,.0f}".format)]
             for c, _ in RL_PAPER_CONDITIONS]
    lines += table([f"condition ({n} seeds: mean [95% t-interval])", "trap rate", "adversary return",
                    "blue return (deceptive reward)", "deceptive entries per seed"], rates)
    counts = sorted({int(q.rsplit("_", 1)[1]) for (_, _, _, q) in values if q.startswith("classified_at_")})
    shown = [c for c in counts if c in (counts[0], counts[-1]) or c in (100, 300, 500, 1000)]
    accuracy = []
    for model, what in (("honest", "honest baseline below the deceptive baseline (deceptive vs honest)"),
                        ("soo", "SOO fine-tuned agent below the deceptive baseline")):
        last = series(model, f"classified_at_{counts[-1]}")
        accuracy.append([what] + [f"{100 * mean(series(model, f'classified_at_{c}')):.0f}%" for c in shown]
                        + [f"{sum(x == 1.0 for x in last)} of {n}"])
    lines += ["", "Classification by mean SOO: the share of evaluation seeds in which the model's mean SOO over "
              "the first N episodes is below the deceptive baseline's (mean over training seeds):", ""]
    lines += table(["model", *[f"N = {c}" for c in shown], f"training seeds classified perfectly at N = {counts[-1]}"],
                   accuracy)
    return lines + ["", f"Data: `docs/results/data/{RL_PAPER_PER_SEED}`; produced by:", ""] + [
        f"    {c}" for c in RL_PAPER_COMMANDS]


BLOCKS = {
    "llm.md": {"llm-sweep": llm_sweep,
               "llm-l24-per-seed": lambda: llm_deception_per_seed("llm_l24chat_authors.csv"),
               "llm-l24-latent": lambda: llm_model_per_seed("llm_l24chat_authors.csv"),
               "llm-l12": lambda: llm_deception_per_seed("llm_l12_authors.csv"),
               "llm-l12-latent": lambda: llm_model_per_seed("llm_l12_authors.csv"),
               "llm-generated": llm_generated_per_seed},
    "rl.md": {"rl-endpoints": rl_endpoints, "rl-controls": rl_controls,
              "rl-prestated-first-run": rl_prestated_first_run, "rl-prestated": rl_prestated_per_seed,
              "rl-effects-paper": lambda: rl_effects_table("rl_factorial"),
              "rl-effects-replicate": lambda: rl_effects_table("rl_factorial_replicate"),
              "rl-effects-pooled": rl_effects_table, "rl-bounds": rl_bounds, "rl-power": rl_power_per_seed,
              "rl-classification": rl_classification_and_paper_view, "rl-paper-design": rl_paper_design,
              "rl-rerun-check": rl_rerun_check},
}
BLOCK = re.compile(r"(<!-- make_tables: ([\w-]+) -->\n)(.*?)(<!-- /make_tables -->)", re.S)


def render(page: str, text: str) -> str:
    makers = BLOCKS[page]
    found = set()

    def replace(match):
        name = match.group(2)
        if name not in makers:
            raise SystemExit(f"{page}: unknown block {name!r}")
        found.add(name)
        return match.group(1) + "\n".join(makers[name]()) + "\n" + match.group(4)

    new = BLOCK.sub(replace, text)
    missing = set(makers) - found
    if missing:
        raise SystemExit(f"{page}: no marker for block(s) {sorted(missing)}")
    return new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is out of date; write nothing")
    args = parser.parse_args()
    stale = []
    for page in BLOCKS:
        path = HERE / page
        text = path.read_text(encoding="utf-8")
        new = render(page, text)
        if new != text:
            stale.append(page)
            if not args.check:
                path.write_text(new, encoding="utf-8")
        print(f"docs/results/{page}: {'out of date' if args.check and new != text else 'rewritten' if new != text else 'up to date'} "
              f"({len(BLOCKS[page])} tables)")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
