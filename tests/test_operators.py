"""Degradation operators: shapes, linearity and adjoints on tiny images; each task end to end."""

import numpy as np
import pytest
import torch
from scipy.ndimage import convolve

import src_core
from src_core import Blur, Compose, DIPError, DIPRun, Downsample, Identity, Mask, Operator, gaussian_psf
from src_core.operators import lanczos_taps, padded_grid, split_mask


def _matrix(op, shape):
    """The operator as an explicit matrix, column by column from basis images."""
    n = int(np.prod(shape))
    cols = [op.apply(torch.eye(n)[i].reshape(1, 1, *shape)).flatten() for i in range(n)]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("op", [Identity(), Downsample(2), Downsample(4), Blur(gaussian_psf(1.0)),
                                Blur(np.arange(12, dtype=float).reshape(3, 4)),
                                Blur(gaussian_psf(0.8)).then(Downsample(2))])
def test_operators_are_linear_and_autograd_gives_their_adjoint(op):
    shape = (8, 8)
    a = _matrix(op, shape)
    assert a.shape == (64 // op.factor ** 2, 64)
    x = torch.rand(1, 1, *shape, dtype=torch.float32)
    y = torch.rand(a.shape[0])
    assert torch.allclose(op.apply(x).flatten(), a @ x.flatten(), atol=1e-5)
    # the loop's gradient is A^T applied to the residual: autograd must give the true adjoint
    x.requires_grad_(True)
    (op.apply(x).flatten() @ y).backward()
    assert torch.allclose(x.grad.flatten(), a.T @ y, atol=1e-5)


def test_blur_is_scipy_convolution_and_a_delta_is_the_identity():
    rng = np.random.default_rng(0)
    image = rng.random((9, 11)).astype(np.float32)
    for psf in (gaussian_psf(1.2), rng.random((4, 6)), rng.random((5, 3))):
        expected = convolve(image, psf / psf.sum(), mode="nearest")
        got = Blur(psf).apply(torch.from_numpy(image)[None, None])[0, 0].numpy()
        assert np.allclose(got, expected, atol=1e-6)
    delta = np.zeros((5, 5))
    delta[2, 2] = 3.0
    assert np.allclose(Blur(delta).apply(torch.from_numpy(image)[None, None])[0, 0].numpy(), image)


def test_downsample_is_the_original_lanczos_kernel_and_keeps_constants():
    # the original's 2D formula (models/downsampler.py, phase 1/2), evaluated point by point
    f, support = 4, 2
    width = 4 * f + 1
    centre = (width + 1) / 2
    k = np.zeros((width - 1, width - 1))
    for i in range(1, width):
        for j in range(1, width):
            val = 1.0
            for d in (abs(i + 0.5 - centre) / f, abs(j + 0.5 - centre) / f):
                if d != 0:
                    val *= support * np.sin(np.pi * d) * np.sin(np.pi * d / support) / (np.pi ** 2 * d * d)
            k[i - 1, j - 1] = val
    k /= k.sum()
    taps = lanczos_taps(4)
    assert np.allclose(np.outer(taps, taps), k, atol=1e-12)
    out = Downsample(4).apply(torch.full((2, 3, 32, 48), 0.25))
    assert out.shape == (2, 3, 8, 12) and torch.allclose(out, torch.tensor(0.25))


def test_grids_pad_to_the_network_multiple_and_hold_the_margin():
    g = padded_grid((37, 45), 1, 0, 16)
    assert g.output == g.observation == (48, 48)
    assert g.output_crop[0].start == (48 - 37) // 2  # centred, as before the operators
    g = padded_grid((21, 16), 4, 0, 32)
    assert g.output == (96, 64) and g.observation == (24, 16)
    assert [s.stop - s.start for s in g.output_crop] == [84, 64]
    assert g.output_crop[0].start == 4 * g.observation_crop[0].start
    g = padded_grid((32, 32), 3, 7, 16)  # a factor that does not divide 16: the grid grows
    assert g.output[0] % 48 == 0 and g.observation[0] * 3 == g.output[0]
    assert g.observation_crop[0].start * 3 >= 7


def test_masks_come_last_and_compositions_add_up():
    m = np.ones((8, 8), bool)
    op, mask = split_mask(Blur(gaussian_psf(1.0)).then(Mask(m)))
    assert isinstance(op, Blur) and mask is m
    assert isinstance(split_mask(Mask(m))[0], Identity)
    with pytest.raises(DIPError, match="last"):
        split_mask(Mask(m).then(Blur(gaussian_psf(1.0))))
    c = Compose(Blur(gaussian_psf(1.0)), Downsample(2), Blur(gaussian_psf(1.0)))
    assert c.factor == 2 and c.margin == 3 + 2 * 3 and not c.identity


@pytest.mark.parametrize("make, words", [
    (lambda: Blur(np.ones((2, 2, 3, 3))), "for a z-stack"),
    (lambda: Blur(-np.ones((3, 3))), "negative"),
    (lambda: Blur(np.zeros((3, 3))), "sums to zero"),
    (lambda: Blur(np.full((3, 3), np.nan)), "non-finite"),
    (lambda: Downsample(1), "factor"),
    (lambda: Downsample(2.5), "factor"),
    (lambda: gaussian_psf(0), "sigma"),
    (lambda: split_mask("blur"), "Operator"),
])
def test_bad_operators_are_refused_with_advice(make, words):
    with pytest.raises(DIPError, match=words):
        make()


def test_bad_observations_for_an_operator_are_refused_before_work(tiny, small_image):
    img = small_image[None]
    with pytest.raises(DIPError, match="answer's"):
        src_core.prepare(img[0][:16, :16], task="sr", factor=2, reference=img[0][:16, :16], preset="cpu")
    with pytest.raises(DIPError, match="keep_observed"):
        DIPRun(img, None, tiny(), keep_observed=True, operator=Downsample(2))
    with pytest.raises(DIPError, match="once"):
        DIPRun(img, np.ones((32, 32), bool), tiny(), operator=Mask(np.ones((32, 32), bool)))
    with pytest.raises(DIPError, match="PSF"):
        DIPRun(img[:, :4, :4], None, tiny(), operator=Blur(np.ones((11, 11))))
    with pytest.raises(DIPError, match="option of task 'deconvolve'"):
        src_core.prepare(small_image, task="sr", psf=2.0)
    with pytest.raises(DIPError, match="not both"):
        src_core.prepare(small_image, task="sr", operator=Identity())
    with pytest.raises(DIPError, match="the answer is 2x the input.*scales=3"):
        src_core.prepare(small_image[:8, :8], task="sr", factor=2, preset="table1")


def _psnr(a, b):
    return src_core.psnr_ssim(a, b, with_ssim=False)[0]


def test_super_resolution_gives_the_larger_image_and_learns(tiny):
    y, x = np.mgrid[0:64, 0:64] / 63.0
    hr = (0.5 + 0.4 * np.sin(9 * x) * np.cos(7 * y)).astype(np.float32)[None]
    lr = Downsample(2).apply(torch.from_numpy(hr)[None])[0].numpy()
    events = list(DIPRun(lr, None, tiny(iterations=120, report_every=40, lr=0.02), reference=hr,
                         operator=Downsample(2)))
    fin = events[-1]
    assert fin.output.shape == (1, 64, 64)
    psnrs = [e.psnr for e in events if e.kind == "progress"]
    assert psnrs[-1] > psnrs[0] + 3
    assert fin.history.fit_psnr[-1] > fin.history.fit_psnr[0]


def test_deconvolution_beats_the_blurred_input(tiny):
    clean = np.full((32, 32), 0.2, np.float32)
    clean[8:24, 8:24] = 0.8
    clean[12:20, 12:20] = 0.4
    psf = gaussian_psf(1.5)
    blurred = Blur(psf).apply(torch.from_numpy(clean)[None, None])[0].numpy()
    fin = DIPRun(blurred, None, tiny(iterations=200, report_every=50, lr=0.02, sigma_p=0.0),
                 reference=clean[None], operator=Blur(psf)).run()
    assert _psnr(fin.output, clean[None]) > _psnr(blurred, clean[None]) + 2


def test_deconvolution_leaves_room_above_the_input_and_richardson_lucy_no_bright_frame():
    """A blur lowers peaks: an image scaled by its own range gets room above its brightest value
    (else the answer could never be brighter than the blurred input); 8-bit keeps its 0..255."""
    from src_core.classical import richardson_lucy

    y, x = np.mgrid[0:32, 0:32]
    photo = (20 + 190 * np.exp(-((x - 16) ** 2 + (y - 16) ** 2) / 40.0)).astype(np.float32)  # 20..210
    problem = src_core.prepare(photo, task="deconvolve", psf=2.0, preset="cpu")
    assert problem.images.max() == pytest.approx(0.5, abs=1e-6)
    assert any("2x the input's range" in n for n in problem.notes)
    assert problem.to_user(np.ones((1, 1, 32, 32), np.float32)).max() == pytest.approx(20 + 2 * 190, rel=1e-5)
    eight_bit = src_core.prepare(photo.astype(np.uint8), task="deconvolve", psf=2.0, preset="cpu")
    assert eight_bit.images.max() == pytest.approx(210 / 255, abs=1e-6)
    assert src_core.prepare(photo, task="denoise", preset="cpu").images.max() == pytest.approx(1.0)
    flat = np.full((2, 24, 24), 0.4, np.float32)  # nothing to sharpen: borders must stay as the middle
    assert np.abs(richardson_lucy(flat, gaussian_psf(2.0)) - 0.4).max() < 1e-3  # zero padding: 0.6


def test_a_users_own_operator_runs_through_the_api():
    class KeepLeftHalf(Operator):
        """A made-up degradation: only the left half of the image was recorded."""

        def apply(self, x):
            return x[..., : x.shape[-1] // 2]

        def output_shape(self, shape):
            c, h, w = shape
            return c, h, 2 * w

    img = np.random.default_rng(0).random((32, 16)).astype(np.float32)
    # width doubling without a factor is not a grid the engine can pad: a clear error
    with pytest.raises(DIPError):
        src_core.restore(img, operator=KeepLeftHalf(), preset="cpu", scales=2, iterations=2)

    class Darken(Operator):
        def apply(self, x):
            return 0.5 * x

    with pytest.raises(DIPError, match="define apply"):
        src_core.restore(img, operator=Operator(), preset="cpu", scales=2, iterations=2)
    result = src_core.restore(img * 0.5, operator=Darken(), preset="cpu", scales=2, iterations=30,
                              validate=0)
    assert result.image.shape == img.shape and result.task == "custom"
    assert result.history.loss[-1] < result.history.loss[0]


@pytest.mark.parametrize("operator", ["identity", "mask"])
def test_denoising_and_inpainting_operators_improve_on_their_input(tiny, operator):
    y, x = np.mgrid[0:32, 0:32] / 31.0
    clean = (0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y)).astype(np.float32)[None]
    if operator == "identity":
        observed = np.clip(clean + np.random.default_rng(0).normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
        op, start = Identity(), observed
        cfg = tiny(iterations=150, report_every=50, lr=0.02, ema=0.99)
    else:
        mask = src_core.bernoulli_mask((32, 32), 0.5, 0)
        observed = clean * mask
        op, start = Mask(mask), observed
        cfg = tiny(iterations=150, report_every=50, lr=0.02)
    fin = DIPRun(observed, None, cfg, reference=clean, operator=op).run()
    assert _psnr(fin.output, clean) > _psnr(start, clean) + 3
