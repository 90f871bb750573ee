"GPU-only checks (skipped without CUDA): the fast extraction path on the device, in bf16, against the plain call."
import pytest, torch
from foresight.models import load_vlm
from foresight.data import moving_digits, positioned_objects
from foresight.extraction import extract_vision, extract_llm_hidden

pytestmark = pytest.mark.gpu

def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()

@pytest.fixture(scope='module')
def tiny_cuda():
    return load_vlm('tiny', device='cuda', dtype=torch.bfloat16)

def test_fast_vision_matches_plain_on_gpu(tiny_cuda):
    model, proc = tiny_cuda
    clips = [positioned_objects(1, size=112)[0].frames, moving_digits(1, frames=6, size=84)[0].frames,
             positioned_objects(1, size=224)[0].frames]
    plain = extract_vision(model, proc, clips, blocks=(7, 24), fast=False)
    fast = extract_vision(model, proc, clips, blocks=(7, 24), fast=True, compile=True)     # compiled, fused MLP
    ref = extract_vision(model.float(), proc, clips, blocks=(7, 24), fast=False)
    model.to(torch.bfloat16)
    for p, f, r in zip(plain, fast, ref):
        for name in ('pre_merge', 'post_merge'):
            e_plain, e_fast = rel(getattr(p, name), getattr(r, name)), rel(getattr(f, name), getattr(r, name))
            assert e_fast <= 1.5 * e_plain + 2e-3, (name, e_plain, e_fast)
        assert rel(f.blocks[24], r.blocks[24]) < 5e-2

def test_fast_llm_hidden_matches_plain_on_gpu(tiny_cuda):
    model, proc = tiny_cuda
    clip = moving_digits(1, frames=4, size=56)[0]
    a = extract_llm_hidden(model, proc, clip, text='push', layers=(0, -1), fast=False)
    b = extract_llm_hidden(model, proc, clip, text='push', layers=(0, -1), fast=True)
    assert rel(b[0], a[0]) < 2e-2 and rel(b[-1], a[-1]) < 5e-2

def test_gpu_repeatability(tiny_cuda):
    "Same inputs, same process: identical bits on the fast path (documented GPU tolerance: see README)."
    model, proc = tiny_cuda
    f = positioned_objects(2, size=112)
    a = extract_vision(model, proc, [c.frames for c in f], fast=True)
    b = extract_vision(model, proc, [c.frames for c in f], fast=True)
    assert all(torch.equal(x.post_merge, y.post_merge) for x, y in zip(a, b))
