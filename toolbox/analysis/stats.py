"""Statistics on llama-bench's raw samples: summaries, stability, significance, ratios.

The headline number of a result is the median of its per-repetition t/s samples (robust to one
slow repetition); its spread is the coefficient of variation (sample standard deviation / mean).
A result whose spread is above the `unstable_spread` setting is flagged, as pyperf does.

Two results are compared with a test on the raw samples (Welch's t-test by default, Mann-Whitney U
on request, both from scipy). Rows without raw samples (old markdown logs: only mean +- stddev)
get a summary but no test: `compare` shows them as untested instead of guessing.

Summaries use the standard library (the end of every `invoke bench` flags unstable rows with the same
rule, and must not pay for importing scipy); numpy and scipy are imported by the tests that need them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

TESTS = ("welch", "mannwhitney")


@dataclass(frozen=True)
class Summary:
    """One result's statistics. `samples` is empty when only a mean and stddev were recorded."""

    n: int | None  # number of samples, None when unknown (no raw samples)
    median: float  # headline t/s (the mean when there are no samples)
    mean: float
    stdev: float | None  # sample standard deviation (ddof=1); None for a single sample
    spread: float | None  # stdev / mean (coefficient of variation)
    min: float | None
    max: float | None
    samples: tuple[float, ...] = ()
    unstable: bool = False
    warning: str | None = None

    @property
    def sem(self) -> float | None:
        """Standard error of the mean, None when the sample count is unknown."""
        if self.stdev is None or not self.n:
            return None
        return self.stdev / math.sqrt(self.n)


def _clean(values) -> list[float]:
    out = []
    for v in values or ():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def summarize(samples=None, *, mean: float | None = None, stdev: float | None = None, unstable_spread: float = 0.05) -> Summary | None:
    """Summarise raw samples, or (without samples) a recorded mean and stddev. None when there is nothing.

    A result is unstable when its spread exceeds `unstable_spread` (a fraction, 0.05 = 5 %); the
    warning names the fix. A single sample cannot show its spread, which is also said.
    """
    xs = _clean(samples)
    if xs:
        n = len(xs)
        mu = statistics.fmean(xs)
        sd = statistics.stdev(xs) if n > 1 else None
        spread = (sd / mu) if (sd is not None and mu > 0) else None
        unstable = spread is not None and spread > unstable_spread
        warning = None
        if unstable:
            warning = f"unstable: spread {spread:.1%} > {unstable_spread:.0%} of the mean; use more repetitions, check thermals"
        elif n < 3:
            warning = f"only {n} sample{'s' if n > 1 else ''}: spread not meaningful; use more repetitions (-r)"
        return Summary(n, float(statistics.median(xs)), mu, sd, spread, min(xs), max(xs), tuple(xs), unstable, warning)
    m = _clean([mean])
    if not m:
        return None
    mu = m[0]
    sd_l = _clean([stdev])
    sd = sd_l[0] if sd_l else None
    spread = (sd / mu) if (sd is not None and mu > 0) else None
    unstable = spread is not None and spread > unstable_spread
    warning = (
        f"unstable: spread {spread:.1%} > {unstable_spread:.0%} of the mean; use more repetitions, check thermals" if unstable else None
    )
    return Summary(None, mu, mu, sd, spread, None, None, (), unstable, warning)


def summarize_row(row: dict, unstable_spread: float = 0.05) -> Summary | None:
    """The t/s summary of one results row: samples_ts when present, else avg_ts +- stddev_ts."""
    return summarize(row.get("samples_ts"), mean=row.get("avg_ts"), stdev=row.get("stddev_ts"), unstable_spread=unstable_spread)


@dataclass(frozen=True)
class Comparison:
    """NEW against BASE: ratio of means (new / base) with its standard uncertainty, and a test's p-value."""

    ratio: float
    ratio_err: float | None  # 1-sigma uncertainty of the ratio (propagated standard errors of the means)
    p_value: float | None  # None when a test was not possible (no raw samples, fewer than 2 per side)
    test: str | None  # "welch" or "mannwhitney"


def ratio_with_uncertainty(base: Summary, new: Summary) -> tuple[float, float | None]:
    """mean_new / mean_base and its 1-sigma uncertainty.

    sigma_r = r * sqrt((sem_b / mean_b)^2 + (sem_n / mean_n)^2), first-order error propagation with
    the standard errors of the means (stdev / sqrt(n)). None when a standard error is unknown.
    """
    r = new.mean / base.mean
    sb, sn = base.sem, new.sem
    if sb is None or sn is None:
        return r, None
    return r, r * math.hypot(sb / base.mean, sn / new.mean)


def compare_samples(base: Summary, new: Summary, test: str = "welch") -> Comparison:
    """Ratio with uncertainty, and a two-sided p-value from the chosen test on the raw samples."""
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose one of {TESTS}")
    import numpy as np
    from scipy import stats as sps

    r, err = ratio_with_uncertainty(base, new)
    p = None
    a, b = np.asarray(base.samples), np.asarray(new.samples)
    if len(a) >= 2 and len(b) >= 2:
        if test == "welch":
            if np.ptp(a) == 0 and np.ptp(b) == 0:
                # No variance on either side: the t statistic is undefined; equal values are no change.
                p = 1.0 if a[0] == b[0] else 0.0
            else:
                p = float(sps.ttest_ind(b, a, equal_var=False).pvalue)
        else:
            p = float(sps.mannwhitneyu(b, a, alternative="two-sided").pvalue)
        if math.isnan(p):
            p = None
    return Comparison(r, err, p, test if p is not None else None)
