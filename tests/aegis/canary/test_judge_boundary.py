"""The sequential boundary: type-I error under continuous looks, by simulation (fast, numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from aegis.canary.judge import long_run_variance, mixture_half_width

PATHS = 4000
LOOKS = 300
TUNE = 48
SEED = 20261206


def _ever_excludes(x: np.ndarray, sigma: float, alpha: float) -> np.ndarray:
    """Per path: did |running mean| ever exceed the mixture half-width at any of the looks?"""
    n = np.arange(1, x.shape[1] + 1)
    means = np.cumsum(x, axis=1) / n
    return (np.abs(means) > mixture_half_width(n, sigma, alpha, TUNE)).any(axis=1)


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_type_one_error_under_continuous_looks_is_at_most_alpha(alpha: float) -> None:
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((PATHS, LOOKS))
    rate = _ever_excludes(x, 1.0, alpha).mean()
    # Monte-Carlo slack: 3 standard errors of a proportion alpha over PATHS paths.
    assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / PATHS), rate


def test_fixed_horizon_interval_looked_at_continuously_is_not_valid() -> None:
    """The reason for the mixture: a 95% z-interval checked after every bucket excludes zero far too often."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((PATHS, LOOKS))
    n = np.arange(1, LOOKS + 1)
    means = np.cumsum(x, axis=1) / n
    naive = (np.abs(means) > 1.96 / np.sqrt(n)).any(axis=1).mean()
    assert naive > 0.3
    assert _ever_excludes(x, 1.0, 0.05).mean() < 0.06


def test_boundary_shrinks_and_detects_a_real_shift() -> None:
    n = np.array([10, 50, 200, 1000])
    hw = mixture_half_width(n, 1.0, 0.05, TUNE)
    assert np.all(np.diff(hw) < 0)
    assert hw[-1] < 0.2
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((500, LOOKS)) + 0.5  # a shift of half a standard deviation
    assert _ever_excludes(x, 1.0, 0.05).mean() > 0.99


def test_long_run_variance_keeps_autocorrelated_noise_valid() -> None:
    """AR(1) bucket noise (players persist between buckets): the plain variance under-covers, Newey-West does not."""
    rng = np.random.default_rng(SEED)
    phi, paths, pre = 0.5, 2000, 288
    e = rng.standard_normal((paths, pre + LOOKS))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    for t in range(1, x.shape[1]):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    history, after = x[:, :pre], x[:, pre:]
    naive = np.mean(
        [_ever_excludes(after[i : i + 1], float(history[i].std()), 0.05)[0] for i in range(paths)]
    )
    robust = np.mean(
        [
            _ever_excludes(after[i : i + 1], float(np.sqrt(long_run_variance(history[i], 12))), 0.05)[0]
            for i in range(paths)
        ]
    )
    assert naive > 0.08
    assert robust <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / paths), robust
