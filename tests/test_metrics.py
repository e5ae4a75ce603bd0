"""Quality metrics against values known in closed form."""

import math

import numpy as np
import pytest

from vidaccel import metrics


def _video(seed=0, shape=(4, 24, 32, 3)):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_identical_videos_have_infinite_psnr_and_unit_ssim():
    v = _video()
    assert metrics.psnr(v, v) == math.inf
    assert metrics.ssim(v, v) == pytest.approx(1.0, abs=1e-12)
    assert metrics.temporal_error(v, v) == 0.0
    out = metrics.compare_videos(v, v)
    assert out["psnr"] == math.inf and out["ssim"] == pytest.approx(1.0) and out["flicker_delta"] == 0.0


def test_psnr_of_known_gaussian_noise_matches_the_analytic_value():
    # float video in [0, 1] without clipping: MSE -> sigma^2, so PSNR -> 10 log10(1 / sigma^2)
    rng = np.random.default_rng(1)
    sigma = 0.05
    ref = rng.uniform(0.2, 0.8, size=(8, 64, 64, 3))
    noisy = ref + rng.normal(0.0, sigma, size=ref.shape)
    expected = 10 * math.log10(1.0 / sigma ** 2)  # 26.0206 dB
    assert metrics.psnr(ref, noisy, data_range=1.0) == pytest.approx(expected, abs=0.05)
    # the same noise in 0-255 units on a uint8 scale gives the same dB
    assert metrics.psnr(ref * 255, noisy * 255, data_range=255) == pytest.approx(expected, abs=0.05)


def test_psnr_of_a_constant_offset_is_exact():
    ref = np.full((3, 16, 16, 3), 100, np.uint8)
    off = ref + np.uint8(5)
    assert metrics.psnr(ref, off) == pytest.approx(10 * math.log10(255 ** 2 / 25), abs=1e-9)
    assert metrics.psnr_per_frame(ref, off).shape == (3,)


def test_ssim_of_constant_images_matches_the_closed_form():
    # zero variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly
    a, b = 80.0, 120.0
    c1 = (metrics.SSIM_K1 * 255) ** 2
    ref = np.full((2, 20, 20, 3), a, np.uint8)
    other = np.full((2, 20, 20, 3), b, np.uint8)
    assert metrics.ssim(ref, other) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-12)


def test_ssim_falls_with_noise_and_is_symmetric():
    v = _video(2, (2, 32, 32, 3))
    noisy = np.clip(v.astype(int) + np.random.default_rng(3).normal(0, 20, v.shape), 0, 255).astype(np.uint8)
    s = metrics.ssim(v, noisy)
    assert 0 < s < 0.99
    assert metrics.ssim(noisy, v) == pytest.approx(s, rel=1e-12)


def test_flicker_of_alternating_frames_is_known():
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    frames[1::2] = 40  # 0, 40, 0, 40, 0: every change is 40
    still = np.zeros_like(frames)
    assert metrics.flicker(frames) == 40.0 and metrics.flicker(still) == 0.0
    assert metrics.temporal_error(still, frames) == 40.0
    assert metrics.compare_videos(still, frames)["flicker_delta"] == 40.0


def test_lpips_is_reported_unavailable_not_faked_without_weights():
    ok, reason = metrics.lpips_status()
    out = metrics.compare_videos(_video(), _video(1))
    if ok:
        assert isinstance(out["lpips"], float)
    else:
        assert out["lpips"] is None and out["lpips_note"] == reason
        with pytest.raises(RuntimeError, match="LPIPS unavailable"):
            metrics.lpips(_video(), _video(1))


def test_shape_mismatch_names_the_fix():
    with pytest.raises(ValueError, match="same resolution"):
        metrics.psnr(_video(), _video(shape=(4, 24, 30, 3)))
