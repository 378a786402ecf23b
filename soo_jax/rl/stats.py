"""Statistics over training seeds for the factorial: mean with a bootstrap 95% interval, paired
differences with an exact sign test, and the smallest effect a design of n seeds detects.

Seeds are the unit: every number here is one value per training seed (an endpoint of one
trained agent), so the intervals say how much a replicate run of the whole experiment would
move, not how precisely one agent was evaluated. NaN values (an endpoint undefined for a seed)
are left out and the count used is reported.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same inputs always give the same interval


def _finite(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, np.float64).reshape(-1)
    return values[np.isfinite(values)]


def bootstrap_ci(values: Sequence[float], level: float = 0.95,
                 n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (resampling seeds with replacement)."""
    x = _finite(values)
    if len(x) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return (float(lo), float(hi))


def summarise(values: Sequence[float]) -> dict:
    """Per-seed values, their mean and bootstrap 95% interval."""
    x = _finite(values)
    lo, hi = bootstrap_ci(x)
    return {"per_seed": [float(v) for v in np.asarray(values, np.float64).reshape(-1)],
            "n": int(len(x)), "mean": float(x.mean()) if len(x) else math.nan, "ci95": [lo, hi]}


def sign_test(differences: Sequence[float]) -> dict:
    """Exact two-sided sign test of median difference 0; ties (exact zeros) are dropped."""
    d = _finite(differences)
    n_pos, n_neg = int(np.sum(d > 0)), int(np.sum(d < 0))
    n = n_pos + n_neg
    p = float(scipy_stats.binomtest(n_pos, n, 0.5).pvalue) if n else 1.0
    return {"positive": n_pos, "negative": n_neg, "ties": int(len(d) - n), "p": p}


def sign_test_needs(n: int, alpha: float = 0.05) -> int | None:
    """The fewest of n pairs that must agree in sign for the two-sided sign test to reach `alpha`
    (None: not even n of n do, e.g. n <= 5 at 5%)."""
    for k in range(n, n // 2, -1):
        if scipy_stats.binomtest(k, n, 0.5).pvalue > alpha:
            return None if k == n else k + 1
    return n // 2 + 1


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The paired effect a two-sided paired t-test at `alpha` detects with probability `power`,
    for n seeds whose differences have standard deviation `sd`: (t_{1-a/2} + t_power) sd / sqrt(n)
    with n - 1 degrees of freedom (the usual normal-theory approximation)."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    df = n - 1
    return float((scipy_stats.t.ppf(1 - alpha / 2, df) + scipy_stats.t.ppf(power, df)) * sd / math.sqrt(n))


def paired_effect(a: Sequence[float], b: Sequence[float]) -> dict:
    """a - b per seed (seeds aligned), with its mean, bootstrap 95% interval, sign test, and the
    smallest effect this many seeds would detect given the spread of these differences."""
    return difference_effect(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def difference_effect(differences: Sequence[float]) -> dict:
    """paired_effect's summary of per-seed differences already taken (e.g. pooled from runs on
    disjoint seeds)."""
    d = np.asarray(differences, np.float64).reshape(-1)
    out = summarise(d)
    out["sign_test"] = sign_test(d)
    finite = _finite(d)
    sd = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    out["sd"] = sd
    out["mde80"] = minimum_detectable_effect(sd, len(finite))
    return out
