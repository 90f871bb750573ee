"foresight.alignment: every estimator against a planted answer (and scipy where scipy has it)."
import time
import numpy as np, pytest, torch, scipy.stats as ss
from scipy.spatial.distance import pdist
from foresight.alignment import (
    linear_cka,
    cka_stats,
    intrinsic_dim,
    intrinsic_dims,
    knn_recall,
    neighbourhood_metrics,
    jaccard_baseline,
    rsa,
    mantel_test,
    rsa_ci,
    rdm,
    linear_probe_r2,
    probe_stats,
    heldout_predictions,
    r2_score,
    permutations,
    knn_search,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # small float64 ops on a shared 2-core machine are much faster without OpenMP contention
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rng(seed=0): return np.random.default_rng(seed)


def subspace_data(n=2000, d=10, ambient=1536, seed=0):
    r = rng(seed)
    Q, _ = np.linalg.qr(r.normal(size=(ambient, d)))
    return r.normal(size=(n, d)) @ Q.T


def test_intrinsic_dim_planted_subspace():
    X = subspace_data()
    for m in ('mle', 'twonn'):
        assert abs(intrinsic_dim(X, m) - 10) / 10 < 0.15, m
    assert intrinsic_dim(X, 'pca95') == 10.0
    d = intrinsic_dims(X[:300])
    assert d['ambient'] == 1536 and d['n'] == 300 and d['pca95'] == 10
    with pytest.raises(ValueError, match='use one of'): intrinsic_dim(X, 'nope')
    with pytest.raises(ValueError, match='lower k2'): intrinsic_dim(X[:15], 'mle')


def test_cka_rotation_scaling_and_identity():
    r = rng(1)
    X = r.normal(size=(80, 40))
    Q, _ = np.linalg.qr(r.normal(size=(40, 40)))
    assert linear_cka(X, X) == 1.0 and isinstance(linear_cka(X, X), float)
    for deb in (False, True):
        assert abs(linear_cka(X, 5.0 * X @ Q, debiased=deb) - 1) < 1e-10
        assert linear_cka(X, X * np.linspace(0.05, 4, 40), debiased=deb) < 0.98   # anisotropic scaling changes it
    Y = r.normal(size=(80, 40))
    Xw, Yw = X @ r.normal(size=(40, 500)), Y @ r.normal(size=(40, 500))
    assert abs(linear_cka(Xw, Yw) - linear_cka(np.asarray(Xw, np.float32), Yw)) < 1e-5   # float32 input is fine


def test_debiased_cka_near_zero_for_independent_wide_data():
    r = rng(2)
    X, Y = r.normal(size=(40, 3000)), r.normal(size=(40, 3000))
    assert linear_cka(X, Y) > 0.9                       # biased: inflated
    assert abs(linear_cka(X, Y, debiased=True)) < 0.05  # debiased: about 0


def test_debiased_cka_matches_song_formula():
    r = rng(3)
    X = r.normal(size=(30, 12))
    Y = X[:, :4] @ r.normal(size=(4, 20)) + r.normal(size=(30, 20))
    def hsic(K, L):
        n = len(K)
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        o = np.ones(n)
        return (np.sum(K * L) + (o @ K @ o) * (o @ L @ o) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (o @ K @ L @ o)) / (
            n * (n - 3)
        )
    K, L = X @ X.T, Y @ Y.T
    assert abs(linear_cka(X, Y, debiased=True) - hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))) < 1e-9


def test_cka_stats_null_is_shuffled_cka_and_ci_covers():
    r = rng(4)
    X = r.normal(size=(50, 20))
    Y = X[:, :5] @ r.normal(size=(5, 30)) + 2 * r.normal(size=(50, 30))
    for deb in (False, True):
        s = cka_stats(X, Y, debiased=deb, n_perm=1, n_boot=2, seed=9)
        p = permutations(50, 1, 9)[0].cpu().numpy()
        assert abs(s['null_mean'] - linear_cka(X, Y[p], debiased=deb)) < 1e-10
    s = cka_stats(X, Y, debiased=True, n_perm=200, n_boot=200)
    assert s['p'] < 0.01 and s['ci'][0] < s['cka'] < s['ci'][1] and abs(s['null_mean']) < 0.03
    u = cka_stats(r.normal(size=(50, 20)), r.normal(size=(50, 30)), debiased=True, n_perm=200, n_boot=50)
    assert u['p'] > 0.01 and abs(u['calibrated']) < 0.1


def test_heldout_r2_matches_noise_level():
    r = rng(5)
    n, dx, dy = 4000, 20, 8
    X = r.normal(size=(n, dx))
    S = X @ (r.normal(size=(dx, dy)) / np.sqrt(dx))
    for noise in (0.5, 2.0):
        Y = S + np.sqrt(noise) * r.normal(size=S.shape)
        truth = r2_score(torch.tensor(Y), torch.tensor(S))   # signal variance / total variance
        assert abs(linear_probe_r2(X, Y) - truth) < 0.02, noise


def test_heldout_r2_is_never_in_sample():
    r = rng(6)
    X, Y = r.normal(size=(60, 2000)), r.normal(size=(60, 10))
    assert abs(linear_probe_r2(X, Y)) < 0.1               # in-sample this would be 1
    s = probe_stats(X, Y, n_shuffle=5, n_boot=30)
    assert abs(s['improvement']) < 0.1 and abs(s['cosine'] - s['cosine_null']) < 0.2


def test_probe_stats_related():
    r = rng(7)
    X = r.normal(size=(300, 30))
    Y = X[:, :10] @ r.normal(size=(10, 20)) + r.normal(size=(300, 20))
    s = probe_stats(X, Y, n_shuffle=5, n_boot=40)
    assert s['ci'][0] < s['r2'] < s['ci'][1] and s['r2'] > 0.7 and s['null_mean'] < 0.02 and s['p'] <= 1 / 6
    assert s['cosine'] > 0.8 and abs(s['cosine_null']) < 0.15
    assert all(a > 0 for a in heldout_predictions(X, Y, cv='loo')['alphas'])


def test_recall_identical_and_unrelated():
    r = rng(8)
    X = r.normal(size=(600, 16))
    Q, _ = np.linalg.qr(r.normal(size=(16, 16)))
    for k in (5, 10, 20): assert knn_recall(X, 3 * X @ Q, k) == 1.0
    for k in (5, 10, 20): assert abs(knn_recall(X, r.normal(size=(600, 16)), k) - k / 599) < 0.01
    m = neighbourhood_metrics(X, X @ Q, n_boot=20)
    assert all(abs(v['value'] - 1) < 1e-12 for v in m.values())
    u = neighbourhood_metrics(X, r.normal(size=(600, 8)), n_boot=60)
    for name, v in u.items():
        assert v['ci'][0] - 1e-9 <= v['baseline'] * 1.5 and v['value'] < 2.5 * v['baseline'], (name, v)


def test_jaccard_baseline_by_simulation():
    r = rng(9)
    sims = [
        len(set(a) & set(b)) / len(set(a) | set(b))
        for a, b in ((r.choice(29, 10, replace=False), r.choice(29, 10, replace=False)) for _ in range(5000))
    ]
    assert abs(jaccard_baseline(30, 10) - np.mean(sims)) < 0.005


def test_rsa_matches_scipy():
    r = rng(10)
    X = r.normal(size=(40, 6))
    Y = X @ r.normal(size=(6, 9)) + r.normal(size=(40, 9))
    for metric in ('euclidean', 'cosine'):
        a, b = pdist(X, metric), pdist(Y, metric)
        assert np.allclose(rdm(X, metric).cpu().numpy(), a)
        assert abs(rsa(X, Y, 'spearman', metric) - ss.spearmanr(a, b).statistic) < 1e-10
        assert abs(rsa(X, Y, 'pearson', metric) - ss.pearsonr(a, b).statistic) < 1e-10
        assert abs(rsa(X, Y, 'kendall', metric) - ss.kendalltau(a, b).statistic) < 1e-10


def test_mantel_small_p_when_related_uniform_when_not():
    r = rng(11)
    X = r.normal(size=(40, 8))
    Y = X @ r.normal(size=(8, 12)) + r.normal(size=(40, 12))
    m = mantel_test(X, Y, n_perm=499)
    assert m['p'] < 0.01 and m['n_pairs'] == 780
    lo, hi = rsa_ci(X, Y, n_boot=100)
    assert lo < m['r'] < hi
    t0 = time.time()
    ps = [mantel_test(r.normal(size=(16, 5)), r.normal(size=(16, 5)), n_perm=99, seed=i)['p'] for i in range(200)]
    assert time.time() - t0 < 60
    assert 0.42 < np.mean(ps) < 0.58 and ss.kstest(ps, 'uniform').pvalue > 0.01


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match='X has 5 rows, Y has 6'): linear_cka(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match='flatten each sample'): rsa(np.zeros((5, 2, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match='need more than 20 samples'): neighbourhood_metrics(np.eye(10), np.eye(10))
    with pytest.raises(ValueError, match="metric='manhattan'"): rsa(np.eye(5), np.eye(5), metric='manhattan')
    with pytest.raises(ValueError, match="method='x'"): rsa(np.eye(5), np.eye(5), method='x')


@pytest.mark.gpu
def test_scales_to_ten_thousand_samples_on_gpu():
    "n = 10 000 pairs of a 3584-wide and a 2048-wide space: every estimator, timed."
    g = torch.Generator(device='cuda').manual_seed(0)
    n = 10_000
    X = torch.randn(n, 3584, device='cuda', generator=g, dtype=torch.float64)
    Y = X[:, :256] @ torch.randn(256, 2048, device='cuda', generator=g, dtype=torch.float64) / 16 + torch.randn(
        n, 2048, device='cuda', generator=g, dtype=torch.float64
    )
    times = {}
    def timed(name, fn):
        torch.cuda.synchronize()
        t = time.time()
        v = fn()
        torch.cuda.synchronize()
        times[name] = time.time() - t
        return v
    c = timed('linear_cka (biased + debiased)', lambda: (linear_cka(X, Y), linear_cka(X, Y, debiased=True)))
    s = timed('cka_stats (200 perms, 50 boots)', lambda: cka_stats(X, Y, n_perm=200, n_boot=50))
    timed('rsa spearman + pearson', lambda: (rsa(X, Y), rsa(X, Y, 'pearson', 'cosine')))
    timed('rsa kendall (2M-entry subsample)', lambda: rsa(X, Y, 'kendall'))
    m = timed('mantel_test (99 perms)', lambda: mantel_test(X, Y, n_perm=99))
    timed('rsa_ci (20 boots)', lambda: rsa_ci(X, Y, n_boot=20))
    timed('neighbourhood_metrics (10 half-samples)', lambda: neighbourhood_metrics(X, Y, n_boot=10))
    timed('intrinsic_dims', lambda: intrinsic_dims(X))
    p = timed('probe_stats (5 folds, 3 shuffles, 5 refits)', lambda: probe_stats(X, Y, n_shuffle=3, n_boot=5))
    for k, v in times.items(): print(f'{k:40s} {v:7.2f} s')
    print(torch.cuda.max_memory_allocated() / 2 ** 30, 'GiB peak')
    assert c[1] > 0.05 and s['p'] < 0.01 and m['p'] < 0.05 and p['r2'] > 0.05
    assert sum(times.values()) < 300


# ---- issue 17: chance correction, refitted intervals, controls, layer choice, source groups ----
from foresight.alignment import (recall_chance, chance_corrected, RECALL_MIN_N, group_codes, group_folds, group_halves,
                                 split_groups, r2_resampler, cka_resampler, rsa_resampler, recall_resampler,
                                 paired_difference, choose_layer, criterion_verdict, recommend, half_sample_interval)
from foresight.stats import bootstrap_ci


def test_chance_corrected_recall_is_zero_for_unrelated_spaces_at_any_n():
    r = rng(20)
    assert abs(recall_chance(64) - 10 / 63) < 1e-12 and abs(recall_chance(450) - 10 / 449) < 1e-12 and RECALL_MIN_N > 64
    for n, reps in ((64, 8), (450, 2)):
        ms = [
            neighbourhood_metrics(r.normal(size=(n, 16)), r.normal(size=(n, 24)), n_boot=0)['R@10'] for _ in range(reps)
        ]
        raw, corr = np.mean([m['value'] for m in ms]), np.mean([m['corrected'] for m in ms])
        assert abs(raw - recall_chance(n)) < 0.02, (n, raw)         # raw recall sits at chance: 15.9 % at n = 64
        assert abs(corr) < 0.02, (n, corr)                          # corrected: about 0 whatever n
    assert chance_corrected(1.0, 0.3) == 1.0 and chance_corrected(0.3, 0.3) == 0.0


def _related(r, n=60):
    X = r.normal(size=(n, 8))
    return X, X @ np.random.default_rng(99).normal(size=(8, 12)) + 3 * r.normal(size=(n, 12))


def test_neighbourhood_interval_covers_about_95_percent():
    "Neighbour lists recomputed in half-samples: coverage near 95 %; lists held fixed (rows resampled) fall short."
    t0 = time.time()
    r = rng(21)
    truth = np.mean([recall_resampler(*_related(r), device='cpu')(torch.arange(60)) for _ in range(300)])
    hits = fixed = 0
    sims = 80
    for i in range(sims):
        X, Y = _related(r)
        m = neighbourhood_metrics(X, Y, ks=(10,), n_boot=30, seed=i, device='cpu')['R@10']
        hits += m['corrected_ci'][0] <= truth <= m['corrected_ci'][1]
        _, A = knn_search(X, 10, device='cpu')
        _, B = knn_search(Y, 10, device='cpu')
        per = ((A[:, :, None] == B[:, None, :]).any(-1).sum(-1).double().numpy() / 10 - 10 / 59) / (1 - 10 / 59)
        lo, hi = bootstrap_ci(per, n_boot=300, method='percentile', seed=i)
        fixed += lo <= truth <= hi
    print(f'coverage: refitted {hits / sims:.3f}, fixed lists {fixed / sims:.3f}, {time.time() - t0:.1f} s')
    assert 0.9 <= hits / sims and fixed / sims < hits / sims


def test_r2_interval_refits_and_covers():
    r = rng(22)
    truth = np.mean([linear_probe_r2(*_related(r), device='cpu') for _ in range(150)])
    hits = sum(
        lo <= truth <= hi
        for lo, hi in (probe_stats(*_related(r), n_shuffle=2, n_boot=20, seed=i, device='cpu')['ci'] for i in range(40))
    )
    assert hits / 40 >= 0.88, hits


def test_half_sample_interval_matches_the_standard_error_of_a_mean():
    r = rng(23)
    x = r.normal(size=400)
    g = np.arange(400)
    reps = [x[i.numpy()].mean() for i in group_halves(g, 400, seed=1)]
    lo, hi = half_sample_interval(reps, x.mean(), 400)
    assert abs((hi - lo) / (2 * 1.96) / (x.std() / 20) - 1) < 0.15


def test_twins_are_one_unit():
    r = rng(24)
    base = r.normal(size=(40, 200))
    X = np.vstack([base, base])
    Y = np.vstack([r.normal(size=(40, 6))] * 2)
    g = [f's{i}' for i in range(40)] * 2                                       # row i and row i+40 are twins
    codes = group_codes(g)
    for f in group_folds(g, 5, seed=3):  # a fold holds both twins or neither
        assert set(codes[f].tolist()).isdisjoint(
            set(codes[torch.tensor([i for i in range(80) if i not in set(f.tolist())])].tolist())
        )
    for idx in group_halves(g, 20, seed=4): assert len(idx) == 40 and len(set(codes[idx].tolist())) == 20
    a, b = split_groups(g, 5)
    assert set(codes[a].tolist()).isdisjoint(codes[b].tolist())
    _, A = knn_search(X, 5, groups=g)
    assert not (codes[A] == codes[:, None]).any()  # a twin is never a neighbour
    assert linear_probe_r2(X, Y) > 0.5                                          # twins on both sides of a split: leaks
    assert linear_probe_r2(X, Y, groups=g) < 0.1  # by source: nothing to predict
    assert (
        knn_recall(X, Y, 10) > 0.1 and abs(neighbourhood_metrics(X, Y, groups=g, n_boot=0)['R@10']['corrected']) < 0.05
    )


def test_layer_recommended_only_when_the_paired_interval_excludes_zero():
    r = rng(25)
    X = r.normal(size=(80, 12))
    Y = X @ r.normal(size=(12, 20)) + 0.5 * r.normal(size=(80, 20))
    mk = lambda A, B, g: cka_resampler(A, B, device='cpu')
    c = choose_layer(mk, {'good': X, 'noise': r.normal(size=(80, 12)), 'weak': X[:, :2]}, Y, n_boot=60, device='cpu')
    assert c['recommend'] == 'good' and all(d['ci'][0] > 0 for d in c['diffs'].values())
    twin = X + 0.01 * r.normal(size=X.shape)                                   # as good as X: no clear winner
    c = choose_layer(mk, {'a': X, 'b': twin}, Y, n_boot=60, device='cpu')
    assert c['recommend'] is None and c['best'] in ('a', 'b') and c['diffs'][next(iter(c['diffs']))]['ci'][0] <= 0
    mk2 = lambda A, B, g: r2_resampler(A, B, g, device='cpu')
    assert (
        choose_layer(mk2, {'good': X, 'noise': r.normal(size=(80, 12))}, Y, n_boot=30, device='cpu')['recommend']
        == 'good'
    )


def test_random_model_does_not_beat_a_random_control():
    "Two random networks over the same pixels: targets may pass, the paired difference does not, so no PROCEED."
    r = rng(26)
    pix = np.repeat(r.normal(size=(8, 300)), 8, axis=0) + 0.7 * r.normal(size=(64, 300))  # 8 scenes
    def random_net(seed, width):
        w = np.random.default_rng(seed).normal(size=(300, width)) / np.sqrt(300)
        return np.tanh(pix @ w)
    ach, ctl = (random_net(1, 96), random_net(2, 128)), (random_net(3, 96), random_net(4, 128))
    g = range(64)
    verdicts = {}
    for k, mk, target in (('cka', lambda X, Y: cka_resampler(X, Y, device='cpu'), 0.4),
                          ('rsa', lambda X, Y: rsa_resampler(X, Y, device='cpu'), 0.6),
                          ('recall', lambda X, Y: recall_resampler(X, Y, device='cpu'), 0.18),
                          ('r2', lambda X, Y: r2_resampler(X, Y, device='cpu'), 0.5)):
        d = paired_difference(mk(*ach), mk(*ctl), g, n_boot=30)
        assert d['diff_ci'][0] <= 0 <= d['diff_ci'][1], (k, d)
        verdicts[k] = criterion_verdict(d['a'], target, d['diff_ci'])
        assert verdicts[k] == 'FAIL'
        print(k, round(d['a'], 3), 'target met' if d['a'] > target else 'target missed')
    assert recommend(verdicts) != 'PROCEED'
