"""Statistics over training seeds for the factorial: mean with a 95% t-interval (ddof 1), paired
differences with an exact sign test, and the smallest effect a design of n seeds detects, for the
paired t-test and for the sign test (the decision rule the factorial's readings use).

Seeds are the unit: every number here is one value per training seed (an endpoint of one
trained agent), so the intervals say how much a replicate run of the whole experiment would
move, not how precisely one agent was evaluated. NaN values (an endpoint undefined for a seed)
are left out and the count used is reported. (A percentile bootstrap of the mean undercovers at
8-16 seeds: its half-width is about 0.78x and 0.89x of the t-interval's.)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import optimize as scipy_optimize
from scipy import stats as scipy_stats

def _finite(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, np.float64).reshape(-1)
    return values[np.isfinite(values)]


def t_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean over seeds (ddof 1); NaN with fewer than 2 values."""
    x = _finite(values)
    if len(x) < 2:
        return (math.nan, math.nan)
    half = float(scipy_stats.t.ppf(0.5 + level / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return (float(x.mean()) - half, float(x.mean()) + half)


def summarise(values: Sequence[float]) -> dict:
    """Per-seed values, their mean and 95% t-interval (ddof 1)."""
    x = _finite(values)
    lo, hi = t_ci(x)
    return {"per_seed": [float(v) for v in np.asarray(values, np.float64).reshape(-1)],
            "n": int(len(x)), "mean": float(x.mean()) if len(x) else math.nan, "ci95": [lo, hi]}


def format_interval(summary: dict, fmt: str = "{:.3f}") -> str:
    """A `summarise` result as "mean [low, high]"."""
    lo, hi = summary["ci95"]
    return f"{fmt.format(summary['mean'])} [{fmt.format(lo)}, {fmt.format(hi)}]"


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


def sign_test_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Probability that the two-sided sign test at `alpha` rejects, for n seeds whose differences
    are normal with mean `effect` and standard deviation `sd` (each seed positive with
    probability Phi(effect / sd))."""
    needs = sign_test_needs(n, alpha)
    if needs is None or not sd > 0:
        return math.nan if not sd > 0 else 0.0
    p = float(scipy_stats.norm.cdf(effect / sd))
    return float(scipy_stats.binom.sf(needs - 1, n, p) + scipy_stats.binom.cdf(n - needs, n, p))


def sign_test_mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The (positive) paired effect the two-sided sign test at `alpha` detects with probability
    `power`, for normal differences with standard deviation `sd`; NaN if no effect reaches it."""
    if not (np.isfinite(sd) and sd > 0) or sign_test_needs(n, alpha) is None:
        return math.nan
    if sign_test_power(50 * sd, sd, n, alpha) < power:
        return math.nan
    return float(scipy_optimize.brentq(lambda d: sign_test_power(d, sd, n, alpha) - power, 0.0, 50 * sd))


def paired_effect(a: Sequence[float], b: Sequence[float]) -> dict:
    """a - b per seed (seeds aligned), with its mean, 95% t-interval, sign test, and the smallest
    effect this many seeds would detect given the spread of these differences (paired t and sign
    test, 80% power)."""
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
    out["mde80_sign"] = sign_test_mde(sd, len(finite))
    return out
