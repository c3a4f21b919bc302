"""Statistics on raw samples: summaries, the unstable flag, significance tests, ratio uncertainty."""

import math

import pytest
from scipy import stats as sps

from toolbox.analysis import stats


def test_summary_median_and_spread_computed_from_samples():
    s = stats.summarize([100.0, 102.0, 98.0, 101.0, 99.0])
    assert s.n == 5 and s.median == 100.0 and s.mean == 100.0
    # sample standard deviation (ddof=1) of the values: sqrt((0+4+4+1+1)/4)
    assert s.stdev == pytest.approx(math.sqrt(10 / 4))
    assert s.spread == pytest.approx(math.sqrt(2.5) / 100)
    assert s.min == 98.0 and s.max == 102.0
    assert not s.unstable and s.warning is None


def test_median_resists_one_slow_repetition():
    s = stats.summarize([50.0, 50.2, 49.9, 20.0, 50.1])
    assert s.median == 50.0
    assert s.mean < 45


def test_unstable_when_spread_exceeds_threshold_with_a_fix():
    s = stats.summarize([100, 110, 90, 105, 95], unstable_spread=0.05)
    assert s.spread > 0.05 and s.unstable
    assert "use more repetitions" in s.warning and "thermals" in s.warning
    # the same samples are fine with a looser threshold
    assert not stats.summarize([100, 110, 90, 105, 95], unstable_spread=0.10).unstable


def test_few_samples_warn_but_are_not_unstable():
    s = stats.summarize([100.0, 100.5])
    assert not s.unstable and "only 2 samples" in s.warning
    one = stats.summarize([100.0])
    assert one.stdev is None and one.spread is None and one.sem is None


def test_without_samples_uses_recorded_mean_and_stddev():
    s = stats.summarize(None, mean=880.4, stdev=9.1)
    assert s.n is None and s.median == 880.4 and s.spread == pytest.approx(9.1 / 880.4)
    assert s.samples == () and s.sem is None
    assert stats.summarize(None, mean=None) is None
    assert stats.summarize(["nan", None, "x"], mean=None) is None


def test_summarize_row_prefers_samples():
    row = {"samples_ts": [10.0, 11.0, 12.0], "avg_ts": 999.0, "stddev_ts": 1.0}
    assert stats.summarize_row(row).median == 11.0
    assert stats.summarize_row({"avg_ts": 5.0, "stddev_ts": None}).median == 5.0


def test_welch_p_value_is_scipys_and_detects_a_real_change():
    base = stats.summarize([100, 101, 99, 100.5, 99.5])
    new = stats.summarize([90, 91, 89, 90.5, 89.5])
    c = stats.compare_samples(base, new, "welch")
    assert c.p_value == pytest.approx(sps.ttest_ind(new.samples, base.samples, equal_var=False).pvalue)
    assert c.p_value < 1e-6 and c.ratio == pytest.approx(0.9)
    same = stats.compare_samples(base, stats.summarize([100.2, 99.1, 100.9, 99.8, 100.1]), "welch")
    assert same.p_value > 0.3


def test_mann_whitney_on_request():
    base = stats.summarize([1, 2, 3, 4, 5])
    new = stats.summarize([6, 7, 8, 9, 10])
    c = stats.compare_samples(base, new, "mannwhitney")
    assert c.test == "mannwhitney"
    # 5 vs 5 fully separated: the smallest two-sided exact p, 2/252
    assert c.p_value == pytest.approx(2 / 252)
    with pytest.raises(ValueError):
        stats.compare_samples(base, new, "ttest-magic")


def test_ratio_uncertainty_by_hand():
    base = stats.summarize([100.0, 104.0, 96.0])  # mean 100, sd 4, sem 4/sqrt(3)
    new = stats.summarize([110.0, 112.0, 108.0])  # mean 110, sd 2, sem 2/sqrt(3)
    r, err = stats.ratio_with_uncertainty(base, new)
    assert r == pytest.approx(1.1)
    expected = 1.1 * math.sqrt((4 / math.sqrt(3) / 100) ** 2 + (2 / math.sqrt(3) / 110) ** 2)
    assert err == pytest.approx(expected)


def test_no_test_without_samples_and_zero_variance_handled():
    c = stats.compare_samples(stats.summarize(None, mean=100, stdev=1), stats.summarize([101, 102, 100]))
    assert c.p_value is None and c.test is None and c.ratio_err is None
    flat = stats.compare_samples(stats.summarize([5.0, 5.0, 5.0]), stats.summarize([5.0, 5.0, 5.0]))
    assert flat.p_value == 1.0 and flat.ratio == 1.0
