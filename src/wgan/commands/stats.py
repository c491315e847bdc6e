"""Small-sample statistics for seed-replicated experiments: Student's t confidence interval, Welch's t-test.

A handful of seeds per configuration is the usual budget, so intervals use the t distribution (not the
normal), and two configurations are compared with Welch's test, which does not assume equal variances.
The t distribution comes from scipy.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # a difference with Welch p > ALPHA is within seed noise


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` values and the half-width of its confidence interval (NaN for fewer than two values)."""

    mean: float
    half_width: float
    n: int


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean ± ``t_{(1+confidence)/2, n-1} * s / sqrt(n)`` (s: the sample standard deviation)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n < 2:
        return Estimate(mean, math.nan, n)
    sem = statistics.stdev(values) / math.sqrt(n)
    return Estimate(mean, float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sem, n)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test that ``a`` and ``b`` have the same mean (NaN below two values a side).

    Without spread on either side (a metric such as ``classes_covered`` can be the same for every seed),
    equal means give 1.0 and different ones 0.0, the limits of the test, where scipy would return NaN.
    """
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if statistics.variance(a) == statistics.variance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    with warnings.catch_warnings():
        # scipy warns of "catastrophic cancellation" for a side whose values are all equal (classes_covered 9 on
        # every seed); its variance is then exactly 0, which Welch's test handles: the p-value stands
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def within_noise(p: float, alpha: float = ALPHA) -> bool:
    """Whether a Welch p-value says the difference is indistinguishable from seed noise."""
    return not math.isnan(p) and p > alpha
