"""E1.5 reconstruction: adapters, the latent route through the frozen VAE decoder, the conditioning route through
diffusers' LTX pipelines, metrics and FVD."""
import warnings
import numpy as np, pytest, torch
from foresight.models import load_vlm, load_video_vae
from foresight.data import moving_digits, resize_frames
from foresight.extraction import encode_video_vae, decode_video_vae, extract_vision
from foresight.metrics import psnr, lpips_distance
from foresight.reconstruction import (
    make_adapter,
    n_params,
    train_latent_route,
    render_latent_route,
    latent_route_loss,
    load_ltx_transformer,
    load_ltx_scheduler,
    make_pipeline,
    train_conditioning_route,
    sample_conditioning_route,
    flow_matching_loss,
    frame_metrics,
    temporal_consistency,
    lpips_band,
    frechet_distance,
    fvd,
    fit_grid,
    resample_grid,
    _FakeI3D,
)


@pytest.fixture(scope='module')
def vae(): return load_video_vae('tiny').requires_grad_(False)

@pytest.fixture(scope='module')
def clip():
    "One real moving-digits clip: its VLM post-merge latents, its normalised VAE latents and its frames in [0, 1]."
    frames = moving_digits(1, frames=9, size=112, seed=3)[0].frames
    model, proc = load_vlm('tiny')
    z = extract_vision(model, proc, frames).post_merge[None]                 # (1, 5, 4, 4, 96)
    return z, resize_frames(frames, 64, multiple=32)                         # the decoder's side must divide by 32


@pytest.mark.parametrize('shape', ['query', 'mlp'])
def test_adapter_shapes_and_modes(shape):
    z = torch.randn(2, 5, 4, 4, 96)
    assert make_adapter(shape, 96, 16, 32, 2)(z, grid=(3, 2, 5)).shape == (2, 16, 3, 2, 5)
    e, m = make_adapter(shape, 96, 48, 32, 2, n_tokens=128)(z)
    assert e.shape == (2, 128, 48) and m.shape == (2, 128) and m.dtype == torch.long
    with pytest.raises(ValueError, match='output grid'): make_adapter(shape, 96, 16)(z)

def test_capacity_grows_with_width():
    p = [n_params(make_adapter('query', 96, 16, w, 2)) for w in (16, 64, 256)]
    assert p[0] < p[1] < p[2]

def test_grid_helpers():
    x = torch.arange(16.).view(1, 1, 1, 4, 4)
    torch.testing.assert_close(resample_grid(x, (1, 2, 2)).flatten(), torch.tensor([2.5, 4.5, 10.5, 12.5]))
    assert fit_grid(5, 16, 16, 128) == (5, 4, 4) and fit_grid(3, 4, 4, 128) == (3, 4, 4)


def test_latent_route_overfits_one_clip_to_the_oracle(vae, clip):
    """All three loss terms on one real clip: the adapter must learn the clip's own latents and render at the oracle's
    quality."""
    z, frames = clip
    lat = encode_video_vae(vae, frames)[None]
    vid = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float() / 255
    oracle = decode_video_vae(vae, lat[0])
    ad0 = make_adapter('query', 96, 16, 32, 2).fit_norm(z)
    with torch.no_grad(): mse0 = torch.nn.functional.mse_loss(ad0(z, grid=lat.shape[-3:]), lat).item()
    ad = train_latent_route(make_adapter('query', 96, 16, 32, 2), vae, z, lat, vid, steps=150, lr=5e-3, batch_size=1,
                            weights=(1.0, 1.0, 0.5), lpips_frames=3)
    with torch.no_grad(): mse = torch.nn.functional.mse_loss(ad(z, grid=lat.shape[-3:]), lat).item()
    ours = render_latent_route(ad, vae, z, lat.shape[-3:])[0]
    p, po = psnr(ours, vid[0]).mean().item(), psnr(oracle, vid[0]).mean().item()
    l, lo = lpips_distance(ours, vid[0]).mean().item(), lpips_distance(oracle, vid[0]).mean().item()
    assert mse < 0.1 * mse0, (mse, mse0)                                      # it learned the clip's latents
    assert p > po - 0.5 and l < lo + 0.05, (p, po, l, lo)                     # and renders at the oracle's quality

def test_gradients_reach_the_adapter_through_the_decoder(vae):
    "Latent MSE off: only the pixel loss after the decoder can teach the adapter a clip the decoder renders exactly."
    g = torch.Generator().manual_seed(1)
    with torch.no_grad(): vid = decode_video_vae(vae, torch.randn(1, 16, 2, 2, 2, generator=g) * 2)
    z = torch.randn(1, 5, 2, 2, 32, generator=g)
    fresh = make_adapter('mlp', 32, 16, 32, 2).fit_norm(z)
    start = psnr(render_latent_route(fresh, vae, z, (2, 2, 2))[0], vid[0]).mean()
    ad = train_latent_route(
        make_adapter('mlp', 32, 16, 32, 2),
        vae,
        z,
        torch.zeros(1, 16, 2, 2, 2),
        vid,
        steps=80,
        lr=3e-2,
        batch_size=1,
        weights=(0.0, 1.0, 0.0),
    )
    assert ad.history[0]['latent'] >= 0 and 'lpips' not in ad.history[0]
    end = psnr(render_latent_route(ad, vae, z, (2, 2, 2))[0], vid[0]).mean()
    assert end > 30 and end > start + 10, (start, end)

def test_latent_route_loss_parts(vae):
    z, lat, vid = torch.randn(2, 5, 2, 2, 32), torch.randn(2, 16, 2, 2, 2), torch.rand(2, 9, 3, 64, 64)
    ad = make_adapter('mlp', 32, 16, 16, 1).fit_norm(z)
    loss, parts = latent_route_loss(ad, vae, z, lat, vid, 1.0, 1.0, 0.5, lpips_frames=2)
    assert set(parts) == {'latent', 'pixel', 'lpips'}
    assert loss.item() == pytest.approx(parts['latent'] + parts['pixel'] + 0.5 * parts['lpips'], rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in ad.parameters())


@pytest.mark.parametrize('kind, cls', [('ltx', 'LTXPipeline'), ('condition', 'LTXConditionPipeline')])
def test_conditioning_route_trains_and_samples_with_the_real_pipeline(vae, kind, cls):
    tr = load_ltx_transformer('tiny', 16, 48)
    before = {k: v.clone() for k, v in tr.state_dict().items()}
    z = torch.randn(3, 5, 4, 4, 96)
    lat = torch.stack([encode_video_vae(vae, c.frames) for c in moving_digits(3, frames=9, size=64, seed=1)])
    ad = make_adapter('query', 96, 48, 32, 1, n_tokens=128)
    init = {k: v.clone() for k, v in ad.state_dict().items()}
    ad = train_conditioning_route(ad, tr, z, lat, steps=2, lr=1e-3, batch_size=2, frame_rate=8)
    assert len(ad.history) == 2 and all(np.isfinite(h['loss']) for h in ad.history)
    assert any(
        not torch.equal(init[k], v) for k, v in ad.state_dict().items() if k not in ('mu', 'sd')
    )  # the adapter learned
    assert all(torch.equal(before[k], v) for k, v in tr.state_dict().items())  # the transformer stayed frozen
    pipe = make_pipeline(kind, vae, tr, load_ltx_scheduler('tiny', kind))
    assert type(pipe).__name__ == cls and type(pipe).__module__.startswith('diffusers.pipelines.ltx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        v = sample_conditioning_route(pipe, ad, z[:2], 9, 64, 64, steps=2, frame_rate=8, seed=0)
    assert v.shape == (2, 9, 3, 64, 64) and 0 <= v.min() and v.max() <= 1
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        v2 = sample_conditioning_route(pipe, ad, z[:2], 9, 64, 64, steps=2, frame_rate=8, seed=0)
    torch.testing.assert_close(v, v2)                                                                      # seeded

def test_conditioning_needs_matching_width(vae):
    tr = load_ltx_transformer('tiny', 16, 48)
    with pytest.raises(ValueError, match='caption_channels=48'):
        train_conditioning_route(
            make_adapter('mlp', 96, 32, n_tokens=128), tr, torch.randn(1, 5, 4, 4, 96), torch.randn(1, 16, 2, 2, 2),
            steps=1
        )
    with pytest.raises(ValueError, match='sequence adapter'):
        train_conditioning_route(
            make_adapter('mlp', 96, 48), tr, torch.randn(1, 5, 4, 4, 96), torch.randn(1, 16, 2, 2, 2), steps=1
        )

def test_flow_matching_target_is_the_velocity():
    "A transformer that outputs exactly noise − x₀ has zero loss: the objective matches the scheduler's Euler step."
    class Oracle(torch.nn.Module):
        config = type('C', (), dict(patch_size=1, patch_size_t=1))()
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.target = None
        def forward(self, hidden_states, timestep, **kw): return (self.target,)
    from diffusers import LTXPipeline
    x0 = torch.randn(2, 4, 2, 2, 2)
    g = torch.Generator().manual_seed(0)
    _sigma = torch.sigmoid(torch.randn(2, generator=g))   # drawn first, as flow_matching_loss draws it
    noise = torch.randn(x0.shape, generator=g)
    m = Oracle()
    m.target = LTXPipeline._pack_latents(noise - x0)
    loss = flow_matching_loss(m, x0, torch.zeros(2, 3, 8), torch.ones(2, 3), generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0, abs=1e-10)


def test_metrics_and_bands():
    v = torch.rand(2, 4, 3, 64, 64)
    m = frame_metrics(v, v)
    assert m['lpips'].shape == (2, 4) and np.allclose(m['lpips'], 0, atol=1e-4) and np.allclose(m['ssim'], 1, atol=1e-4)
    assert np.allclose(temporal_consistency(v[:, [0, 0, 0, 0]]), 1, atol=1e-4) and (temporal_consistency(v) < 0.2).all()
    assert [lpips_band(x) for x in (0.29, 0.39, 0.41)] == ['target', 'acceptable', 'outside']

def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (20000, 2)), rng.normal(3, 1, (20000, 2))
    assert frechet_distance(a, b) == pytest.approx(18.0, rel=0.02)          # |Δμ|² = 2·3², equal covariances
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)

def test_fvd_with_a_local_torchscript_detector(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.script(_FakeI3D()).save(str(tmp_path/'i3d.pt'))
    v = torch.rand(5, 9, 3, 32, 32)
    assert fvd(v, v, tmp_path/'i3d.pt') == pytest.approx(0, abs=1e-6)
    assert fvd(v, v.flip(-1) * 0.3, tmp_path/'i3d.pt') > 0.05
    with pytest.raises(FileNotFoundError, match='nothing is downloaded'): fvd(v, v, tmp_path/'missing.pt')


def test_split_blocks_keep_twins_together_and_counts_and_rating_sheet(tmp_path):
    import numpy as np, torch
    from foresight.reconstruction import order_by_group, count_objects, count_agreement, human_eval_sheet
    g = ['bunny', 'bikes', 'carphone', 'carphone']
    for sizes in ([2, 1, 1], [1, 2, 1], [1, 1, 2]):
        perm, b = order_by_group(g, sizes), np.cumsum([0] + sizes)
        blocks = [{g[perm[i]] for i in range(b[k], b[k + 1])} for k in range(3)]
        assert not any(blocks[i] & blocks[j] for i in range(3) for j in range(i + 1, 3)), (sizes, blocks)
    fr = np.full((64, 64, 3), 30, np.uint8)
    for y, x in ((10, 10), (40, 12), (30, 45)): fr[y:y + 8, x:x + 8] = (230, 40, 40)
    assert count_objects(fr) == 3
    v = torch.from_numpy(np.stack([fr] * 3)).permute(0, 3, 1, 2)[None].float() / 255
    assert count_agreement(v, v)[0] == 1.0 and count_agreement(v * 0 + 0.12, v)[0] == 0.0
    page = human_eval_sheet(
        tmp_path / 's.html', v[0:1].repeat(2, 1, 1, 1, 1), v[0:1].repeat(2, 1, 1, 1, 1), ['a', 'b']
    ).read_text()
    assert page.count('<div class="clip"') == 2 and 'ratings.json' in page


ADAPTER_DDP_WORKER = r'''
import json, os, sys, torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group('gloo')
rank = dist.get_rank()
from safetensors.torch import save_file
from foresight.extraction import LatentCache
from foresight.models import load_video_vae
from foresight.reconstruction import make_adapter, train_latent_route, load_ltx_transformer, train_conditioning_route
out = sys.argv[1]
d = torch.load(out + '/data.pt')
z = LatentCache(out + '/cache').reader(max_open=1)         # the VLM latents streamed from the cache, batch by batch
vae = load_video_vae('tiny', device='cpu', dtype='float32').requires_grad_(False)
torch.manual_seed(0)
a = train_latent_route(make_adapter('query', 32, 16, 32, 1), vae, z, d['lat'], d['video'], steps=3, lr=1e-2,
batch_size=4,
                       weights=(1.0, 1.0, 0.5), lpips_frames=2, device='cpu')
tr = load_ltx_transformer('tiny', 16, 32, device='cpu', dtype=torch.float32)
torch.manual_seed(0)
c = train_conditioning_route(make_adapter('mlp', 32, 32, 32, 2, n_tokens=8), tr, z, d['lat'], steps=3, lr=1e-2,
batch_size=4,
                             train_transformer=True, device='cpu')
if rank == 0:                                               # rank 0 alone writes
    for name, m in (('latent', a), ('conditioning', c), ('transformer', tr)): save_file(m.state_dict(),
    f'{out}/{name}.safetensors')
    json.dump(dict(latent=a.history, conditioning=c.history), open(out + '/history.json', 'w'))
dist.destroy_process_group()
'''

def test_adapter_training_data_parallel_equals_one_process(vae, tmp_path):
    """Two gloo ranks under torchrun, 2 clips each per step, read their VLM latents from a `LatentCache`, and end where
    one process with global batches of 4 from tensors in memory ends (weights, the jointly trained transformer, the
    global loss history): each rank takes every 2nd clip of the seeded global batch, noise and LPIPS frames are drawn
    for the global batch, and DDP averages the gradients."""
    import json, os, subprocess, sys, types
    from pathlib import Path
    from safetensors.torch import load_file
    from foresight.extraction import cache_latents
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 2, 2, 2, 32, generator=g)
    lat = torch.randn(8, 16, 2, 2, 2, generator=g)
    with torch.no_grad(): video = decode_video_vae(vae.float(), lat)
    torch.save(dict(lat=lat, video=video), tmp_path/'data.pt')
    cache_latents(
        [types.SimpleNamespace(id=f'c{i}') for i in range(8)],
        lambda c: z[int(c.id[1:])],
        tmp_path / 'cache',
        shard_size=3,
        progress=False,
    )
    (tmp_path/'worker.py').write_text(ADAPTER_DDP_WORKER)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        CUDA_VISIBLE_DEVICES='',
        PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
    )
    p = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--nproc_per_node',
            '2',
            '--master_port',
            str(29600 + os.getpid() % 1000),
            str(tmp_path / 'worker.py'),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    torch.manual_seed(0)
    a = train_latent_route(make_adapter('query', 32, 16, 32, 1), vae, z, lat, video, steps=3, lr=1e-2, batch_size=4,
                           weights=(1.0, 1.0, 0.5), lpips_frames=2, device='cpu')
    tr = load_ltx_transformer('tiny', 16, 32, device='cpu', dtype=torch.float32)
    torch.manual_seed(0)
    c = train_conditioning_route(
        make_adapter('mlp', 32, 32, 32, 2, n_tokens=8),
        tr,
        z,
        lat,
        steps=3,
        lr=1e-2,
        batch_size=4,
        train_transformer=True,
        device='cpu',
    )
    hist = json.loads((tmp_path/'history.json').read_text())
    for name, m in (('latent', a), ('conditioning', c), ('transformer', tr)):
        dd = load_file(str(tmp_path/f'{name}.safetensors'))
        for k, v in m.state_dict().items():
            if k.endswith('in_proj_bias'):
                continue   # softmax ignores the key bias: its gradient is rounding, scaled up by Adam
            # Adam divides by the root of the squared gradients, so where gradients are near zero it turns the
            # rounding of two ranks' sums into weight differences. The tiny transformer's cross-attention (near-uniform
            # attention) differs by up to 4e-4 (4 % of lr = 1e-2); its other weights by up to 5.4e-5 here (4e-5 on
            # another CPU), so they get 1e-4 (1 % of lr). The adapters, whose gradients are not small, keep 5e-5.
            tol = (1e-3 if '.attn2.' in k else 1e-4) if name == 'transformer' else 5e-5
            torch.testing.assert_close(dd[k], v, atol=tol, rtol=1e-4, msg=f'{name} {k}')
    for name, m in (('latent', a), ('conditioning', c)):
        assert len(hist[name]) == 3
        for h, o in zip(hist[name], m.history):
            for k in o: assert abs(h[k] - o[k]) < 1e-5 * max(1, abs(o[k])), (name, k, h[k], o[k])

def test_adapter_batch_must_split_over_ranks():
    from foresight.reconstruction import _rank_share
    assert _rank_share(10, 4, 2) == 2 and _rank_share(3, 8, 1) == 3
    with pytest.raises(ValueError, match='multiple of 2'): _rank_share(10, 3, 2)
