"foresight.stats: tests agree with scipy, bootstrap CIs cover at the nominal rate, d recovers a planted effect."
import numpy as np, pytest, scipy.stats as ss, torch
from foresight.stats import (paired_ttest, wilcoxon, wilcoxon_null_pmf, bootstrap_ci, jackknife_values, ci_coverage,
                             cohens_d, compare_paired, P_PRIMARY, P_SECONDARY)


@pytest.mark.parametrize('alt', ['two-sided', 'greater', 'less'])
def test_ttest_matches_scipy(alt):
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 1, 17), rng.normal(0, 1, 17)
    r, ref = paired_ttest(a, b, alt), ss.ttest_rel(a, b, alternative=alt)
    assert np.isclose(r['t'], ref.statistic, rtol=1e-10) and np.isclose(r['p'], ref.pvalue, rtol=1e-10)
    assert r['df'] == 16


@pytest.mark.parametrize('alt', ['two-sided', 'greater', 'less'])
def test_wilcoxon_matches_scipy(alt):
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.4, 1, 23), rng.normal(0, 1, 23)
    r = wilcoxon(a, b, alt)
    assert r['method'] == 'exact'
    assert np.isclose(r['p'], ss.wilcoxon(a, b, alternative=alt, method='exact').pvalue, rtol=1e-10)
    t = np.round(rng.normal(0.2, 1, 70), 1)
    t[:4] = 0  # ties and zeros
    r = wilcoxon(t, alternative=alt)
    assert r['method'] == 'asymptotic' and r['n'] == 70 - int((t == 0).sum())
    ref = ss.wilcoxon(t, alternative=alt, method='asymptotic', correction=False, zero_method='wilcox').pvalue
    assert np.isclose(r['p'], ref, rtol=1e-10)


def test_wilcoxon_null_pmf_by_hand():
    # n = 3: W+ takes 0,1,2,3,3,4,5,6 over the 8 sign patterns
    assert np.allclose(wilcoxon_null_pmf(3) * 8, [1, 1, 1, 2, 1, 1, 1])


def test_bootstrap_coverage_nominal():
    for method in ('percentile', 'bca'):
        cov = ci_coverage(lambda r: r.exponential(2.0, 40), 2.0, n_sims=200, n_boot=2000, method=method, seed=5)
        assert 0.90 <= cov <= 0.99, (method, cov)


def test_bootstrap_seeded_vectorised_and_accepts_tensors():
    x = torch.randn(50, generator=torch.Generator().manual_seed(0)) + 1
    assert bootstrap_ci(x, seed=4) == bootstrap_ci(x.numpy(), seed=4)
    lo, hi = bootstrap_ci(x, n_boot=5000)
    assert lo < x.mean().item() < hi
    assert np.allclose(jackknife_values(np.array([1., 2, 3, 10])), [5, 14 / 3, 13 / 3, 2])


def test_bootstrap_bca_close_to_scipy():
    rng = np.random.default_rng(3)
    x = rng.lognormal(0, 0.8, 80)
    ours = bootstrap_ci(x, n_boot=20000)
    ref = ss.bootstrap((x,), np.mean, n_resamples=20000, method='BCa', random_state=0).confidence_interval
    assert abs(ours[0] - ref.low) < 0.03 and abs(ours[1] - ref.high) < 0.03


def test_cohens_d_planted():
    rng = np.random.default_rng(4)
    base = rng.normal(5, 3, 30000)
    assert abs(cohens_d(base + rng.normal(0.8, 2.0, 30000), base) - 0.4) < 0.02


def test_compare_paired_finds_planted_and_not_null():
    rng = np.random.default_rng(5)
    a = rng.normal(0, 1, 40)
    r = compare_paired(a - 0.6 + rng.normal(0, 0.5, 40), a)
    assert r['significant'] and r['level_reached'] == 'primary' and r['ci'][1] < 0 and r['verdict'].startswith('a < b')
    assert r['alpha'] == P_PRIMARY and compare_paired(a + 1, a, primary=False)['alpha'] == P_SECONDARY
    fp = np.mean(
        [compare_paired(rng.normal(0, 1, 25), rng.normal(0, 1, 25), n_boot=100)['significant'] for _ in range(300)]
    )
    assert fp <= 0.03


def test_bad_input():
    with pytest.raises(ValueError, match='one value per item in both'): compare_paired([1., 2, 3], [1., 2])
    with pytest.raises(ValueError, match='NaN'): bootstrap_ci([1., np.nan, 2.])
    with pytest.raises(ValueError, match="'bca' or 'percentile'"): bootstrap_ci([1., 2.], method='normal')


def test_small_samples_say_wilcoxon_cannot_reach_primary():
    rng = np.random.default_rng(6)
    a = rng.normal(0, 1, 5)
    r = compare_paired(a + 3 + 0.1 * np.arange(5), a)
    assert r['p_t'] < P_PRIMARY and r['p_wilcoxon'] == 0.0625 and not r['significant']
    assert 'cannot go below p = 0.062' in r['verdict']
