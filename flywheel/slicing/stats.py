"""The statistics of slicing: Wilson intervals, one-sided tests of "worse than", and the
Benjamini-Hochberg correction. Everything is vectorized over numpy arrays.

Test choice (used for worst slices, drift and mined keywords alike): a one-sided
two-proportion z-test (pooled variance) when every expected cell count of the 2x2
table is at least :data:`MIN_EXPECTED`, otherwise Fisher's exact test (one-sided,
``alternative="greater"``). Each result names the test it used.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

Z95 = 1.959963984540054
MIN_EXPECTED = 5.0
Z_TEST = "two-proportion z-test (one-sided)"
FISHER = "Fisher exact (one-sided)"


def wilson(k, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Return the Wilson score interval (low, high) of k successes out of n (NaN where n = 0)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        z2 = z * z
        denom = 1.0 + z2 / n
        centre = (p + z2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
        # The interval always holds the observed rate: at k = n (or k = 0) rounding would
        # otherwise leave it 1e-16 short of 1 (above 0), and error bars negative.
        low = np.clip(np.minimum(centre - half, p), 0.0, 1.0)
        high = np.clip(np.maximum(centre + half, p), 0.0, 1.0)
    bad = n <= 0
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def greater_test(k1, n1, k2, n2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Test, per element, whether proportion k1/n1 is greater than k2/n2.

    Returns (statistic, p_value, test name per element); the statistic is the z score
    for the z-test and the odds ratio for Fisher's test. Elements with an empty group
    get p = 1.
    """
    k1, n1, k2, n2 = (np.asarray(a, dtype=float) for a in (k1, n1, k2, n2))
    k1, n1, k2, n2 = np.broadcast_arrays(k1, n1, k2, n2)
    size = k1.shape
    stat = np.full(size, np.nan)
    p = np.ones(size)
    tests = [Z_TEST] * int(np.prod(size)) if size else [Z_TEST]
    valid = (n1 > 0) & (n2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (k1 + k2) / (n1 + n2)
        expected = np.minimum.reduce([
            n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled),
        ])
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (k1 / n1 - k2 / n2) / se
    use_z = valid & (expected >= MIN_EXPECTED) & (se > 0)
    stat = np.where(use_z, z, stat)
    p = np.where(use_z, stats.norm.sf(np.where(use_z, z, 0.0)), p)
    flat_fisher = np.flatnonzero((valid & ~use_z).ravel())
    p_flat, stat_flat = p.ravel().copy(), stat.ravel().copy()
    for i in flat_fisher:
        a, b = k1.ravel()[i], n1.ravel()[i] - k1.ravel()[i]
        c, d = k2.ravel()[i], n2.ravel()[i] - k2.ravel()[i]
        result = stats.fisher_exact([[int(a), int(b)], [int(c), int(d)]], alternative="greater")
        stat_flat[i], p_flat[i] = result.statistic, result.pvalue
        tests[i] = FISHER
    return stat_flat.reshape(size), p_flat.reshape(size), tests


def binomial_greater(k, n, p0) -> np.ndarray:
    """Return the exact one-sided binomial p-value P(X >= k) for X ~ Bin(n, p0)."""
    k = np.asarray(k, dtype=float)
    return stats.binom.sf(k - 1, np.asarray(n, dtype=float), np.asarray(p0, dtype=float))


def bh(p_values) -> np.ndarray:
    """Return Benjamini-Hochberg adjusted p-values (q-values); empty in, empty out."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    return stats.false_discovery_control(np.clip(p, 0.0, 1.0), method="bh")
