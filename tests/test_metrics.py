"Image metrics: PSNR by hand, SSIM against scikit-image, LPIPS against its published values."
from pathlib import Path
import numpy as np, pytest, torch
from skimage.metrics import structural_similarity, peak_signal_noise_ratio
from foresight.metrics import psnr, ssim, lpips_distance, load_image, as_image_batch, lpips_trunk_weights

LPIPS_DATA = Path(__file__).resolve().parent/'data'/'lpips'   # shipped in the repository (BSD-2, LICENSE beside it)


def _sk_ssim(a, b):
    return np.array([structural_similarity(x.permute(1, 2, 0).double().numpy(), y.permute(1, 2, 0).double().numpy(),
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
                                           channel_axis=-1) for x, y in zip(a, b)])


def test_psnr_by_hand():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 16, 24, generator=g) * 0.5
    b = a.clone()
    b[0] += 0.1
    b[1, :, :8] += 0.2  # MSE 0.01 and (0.04 on half) = 0.02
    out = psnr(a, b)
    assert out.shape == (3,)
    assert torch.allclose(out[:2], torch.tensor([20.0, 10 * np.log10(1 / 0.02)], dtype=out.dtype), atol=1e-4)
    assert torch.isinf(out[2])
    c = (a + 0.03 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    ref = [peak_signal_noise_ratio(x.numpy(), y.numpy(), data_range=1) for x, y in zip(a, c)]
    assert np.allclose(psnr(a, c).numpy(), ref, atol=1e-3)


def test_ssim_matches_skimage():
    from skimage import data
    img = as_image_batch(data.chelsea()[::3, ::3])                       # a real photograph, non-square
    g = torch.Generator().manual_seed(1)
    noisy = (img + 0.15 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    dark = img * 0.6
    a, b = torch.cat([img, img, img]), torch.cat([noisy, dark, img])
    out = ssim(a, b)
    assert np.abs(out.numpy() - _sk_ssim(a, b)).max() < 1e-3
    assert abs(out[2].item() - 1) < 1e-6 and out[0] < out[1] < 1


def test_ssim_differentiable():
    a = torch.rand(2, 3, 20, 20)
    b = torch.rand(2, 3, 20, 20, requires_grad=True)
    ssim(a, b).sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_lpips_published_values():
    assert (LPIPS_DATA / 'ex_ref.png').exists(), (
        f"LPIPS test images missing at {LPIPS_DATA} (shared/ must sit beside the clone)"
    )
    ref, p0, p1 = (load_image(LPIPS_DATA/f'{n}.png') for n in ('ex_ref', 'ex_p0', 'ex_p1'))
    d = lpips_distance(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert d.shape == (2,)
    assert abs(d[0].item() - 0.722) <= 0.002 and abs(d[1].item() - 0.138) <= 0.002, d


def test_lpips_vgg_runs_and_ranks():
    ref, p0, p1 = (load_image(LPIPS_DATA/f'{n}.png') for n in ('ex_ref', 'ex_p0', 'ex_p1'))
    d = lpips_distance(torch.cat([ref, ref, ref]), torch.cat([p0, p1, ref]), net='vgg')
    assert d[0] > d[1] > d[2] and abs(d[2].item()) < 1e-6


def test_lpips_gradients_reach_images_only():
    ref = load_image(LPIPS_DATA/'ex_ref.png')
    x = torch.rand_like(ref, requires_grad=True)
    lpips_distance(x, ref).sum().backward()
    assert x.grad.abs().sum() > 0


def test_trunk_weights_layout():
    w = lpips_trunk_weights('alex')
    assert w['Conv_0']['kernel'].shape == (11, 11, 3, 64)              # Flax HWIO, transposed on load


def test_bad_inputs_name_the_fix():
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match='divide uint8 images by 255'): psnr(x * 255, x)
    with pytest.raises(ValueError, match='add a batch axis'): ssim(x[0], x[0])
    with pytest.raises(ValueError, match='differ in shape'): lpips_distance(x, x[..., :32])
    with pytest.raises(ValueError, match='permute'): lpips_distance(x.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match='at least 31x31'): lpips_distance(x[..., :20, :20], x[..., :20, :20])
