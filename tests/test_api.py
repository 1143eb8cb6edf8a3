import json

import numpy as np
import pytest

import src_core
from src_core import DIPError, RunConfig, iterate, prepare, restore

FAST = dict(preset="cpu", scales=2, down_channels=8, up_channels=8, iterations=6, report_every=3,
            device="cpu")


def _gray(shape=(32, 32), dtype=np.uint8, rng=0):
    r = np.random.default_rng(rng).random(shape)
    if dtype == np.uint8:
        return (r * 255).astype(np.uint8)
    if dtype == np.uint16:
        return (r * 4000 + 100).astype(np.uint16)  # 12-bit-like microscopy range
    return r.astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dtype_and_value_range_round_trip(dtype):
    img = _gray(dtype=dtype)
    before = img.copy()
    result = restore(img, task="random", **FAST)
    assert result.image.dtype == img.dtype and result.image.shape == img.shape
    assert np.array_equal(img, before)  # never modified in place
    if dtype == np.uint16:  # back in the input's own range, not squeezed to 0..1 or stretched to 65535
        assert img.min() - 1 <= result.image.min() and result.image.max() <= img.max() + 1
        assert result.image.max() > 1000


def test_float_outside_unit_range_comes_back_in_its_range():
    img = (_gray(dtype=np.float32) * 1000 - 200).astype(np.float32)
    result = restore(img, task="random", **FAST)
    assert result.image.min() >= img.min() - 1e-3 and result.image.max() <= img.max() + 1e-3
    assert result.image.max() > 100


def test_a_reference_of_another_dtype_is_read_in_the_images_units():
    """A float image made from 8-bit data compares with that 8-bit original as intensities; a
    float [0, 1] reference of an integer image (skimage's img_as_float) as fractions of its maximum."""
    clean = (np.random.default_rng(0).random((32, 32)) * 200 + 20).astype(np.uint8)
    dimmer = clean.astype(np.float32) * 0.8 + 5  # a float intensity image, its own min and max
    problem = prepare(dimmer, task="denoise", reference=clean, **FAST)
    lo, span = float(dimmer.min()), float(dimmer.max() - dimmer.min())
    expected = (clean.astype(np.float64) - lo) / span
    np.testing.assert_allclose(problem.references[0, 0], np.clip(expected, 0, 1), atol=1e-6)
    assert expected.max() > 1  # the original is brighter than the image: clipped, not stretched
    uint16 = _gray(dtype=np.uint16)  # 12-bit values in a 16-bit type
    as_float = uint16 / 65535.0
    a = prepare(uint16, task="denoise", reference=uint16, **FAST).references
    b = prepare(uint16, task="denoise", reference=as_float, **FAST).references
    np.testing.assert_allclose(a, b, atol=1e-6)
    unit = clean / 255.0
    c = prepare(unit.astype(np.float32), task="denoise", reference=clean, **FAST).references
    np.testing.assert_allclose(c[0, 0], unit, atol=1e-6)


def test_deconvolution_headroom_does_not_change_what_psnr_means():
    """With headroom the data fill half of [0, 1]; PSNRs still take the input's range as the
    peak, as for every other task (else they would read 6 dB better)."""
    from scipy.ndimage import convolve
    from skimage.metrics import peak_signal_noise_ratio

    from src_core import gaussian_psf

    y, x = np.mgrid[0:32, 0:32]
    clean = (20 + 190 * np.exp(-((x - 16) ** 2 + (y - 16) ** 2) / 30.0)).astype(np.float32)
    blurred = convolve(clean, gaussian_psf(1.0), mode="nearest").astype(np.float32)
    result = restore(blurred, task="deconvolve", psf=1.0, reference=clean, validate=0, classical=None, **FAST)
    s = result.history.summary
    expected = peak_signal_noise_ratio(clean, blurred, data_range=float(blurred.max() - blurred.min()))
    assert s["psnr_corrupted"] == pytest.approx(expected, abs=1e-3)
    assert result.image.max() <= 20 + 2 * (blurred.max() - blurred.min()) + 1e-3


def test_rgb_and_stack_layouts():
    rgb = _gray((32, 40, 3))
    r = restore(rgb, task="random", **FAST)
    assert r.image.shape == (32, 40, 3) and r.image.dtype == np.uint8
    stack = _gray((3, 32, 32))
    seen = []
    r = restore(stack, task="random", callback=lambda e, i: seen.append(i), **FAST)
    assert r.image.shape == (3, 32, 32) and len(r.histories) == 3
    assert sorted(set(seen)) == [0, 1, 2]
    rgb_stack = _gray((2, 32, 32, 3))
    assert restore(rgb_stack, task="random", **FAST).image.shape == (2, 32, 32, 3)


def test_explicit_channel_axis():
    multi = _gray((5, 32, 32)).astype(np.float32) / 255
    r = restore(multi, task="random", channel_axis=0, **FAST)
    assert r.image.shape == (5, 32, 32) and len(r.histories) == 1  # one 5-channel image, not 5 slices


def test_odd_size_is_padded_not_rejected():
    img = _gray((37, 51))
    assert restore(img, task="random", **FAST).image.shape == (37, 51)


def test_inpaint_keeps_observed_pixels_close_and_uses_mask_convention():
    img = _gray()
    mask = np.ones((32, 32), bool)
    mask[10:20, 10:20] = False
    problem = prepare(img, mask, task="inpaint", **FAST)
    assert problem.masks.shape == (1, 1, 32, 32) and not problem.masks[0, 0, 15, 15]
    assert problem.images[0, 0, 15, 15] == 0  # missing pixels carry nothing


def test_2d_mask_applies_to_every_channel_of_rgb():
    rgb = _gray((32, 32, 3))
    mask = np.ones((32, 32), bool)
    mask[:4] = False
    problem = prepare(rgb, mask, task="inpaint", **FAST)
    assert problem.masks.shape == (1, 3, 32, 32) and not problem.masks[0, :, 0].any()


def test_nan_pixels_become_missing_with_a_warning():
    img = _gray(dtype=np.float32)
    img[5, 5] = np.nan
    with pytest.warns(UserWarning, match="1 non-finite"):
        problem = prepare(img, None, task="denoise", **FAST)
    assert not problem.masks[0, 0, 5, 5] and problem.images[0, 0, 5, 5] == 0
    assert any("non-finite" in n for n in problem.notes)


def test_denoise_uses_ema():
    problem = prepare(_gray(), None, task="denoise", preset="cpu")
    assert problem.config.ema == 0.99


@pytest.mark.parametrize("kwargs,words", [
    (dict(mask=np.ones((16, 16), bool), task="inpaint"),
     r"mask shape \(16, 16\) does not match image shape \(32, 32\)"),
    (dict(mask=None, task="inpaint"), "inpainting needs a mask"),
    (dict(mask=np.zeros((32, 32), bool), task="inpaint"), "no observed pixel"),
    (dict(mask=np.full((32, 32), 7), task="inpaint"), "mask values must be 0/1"),
    (dict(task="random", reference=np.zeros((8, 8))), "reference shape"),
    (dict(task="random", lr=-1.0), "lr must be a positive"),
    (dict(task="random", scales=6), "too small for a 6-scale network"),
    (dict(task="random", device="mps"), "not available"),
    (dict(task="blur"), "task must be one of"),
])
def test_bad_input_fails_early_with_a_clear_message(kwargs, words):
    settings = {**FAST, **kwargs}
    with pytest.raises(DIPError, match=words):
        prepare(_gray(), **settings)


def test_iterate_gives_step_by_step_control():
    run = iterate(_gray(), task="random", **FAST)
    kinds = [e.kind for e in run]
    assert kinds == ["progress", "progress", "finished"]
    with pytest.raises(DIPError, match="stack"):
        iterate(_gray((2, 32, 32)), task="random", **FAST)


def test_result_history_serialises_and_repeats_exactly():
    img = _gray()
    first = restore(img, task="random", **FAST)
    record = json.loads(json.dumps(first.to_dict()))
    cfg = RunConfig.from_dict(record["config"])
    again = restore(img, task="random", config=cfg)
    assert np.array_equal(first.image, again.image)
    assert record["slices"][0]["iterations"] == [3, 6] and len(record["slices"][0]["loss"]) == 6


def test_shipped_samples_load():
    assert src_core.load_sample("table1/barbara.png").shape == (512, 512)
    assert src_core.load_sample("dip/kate.png").shape[:2] == (512, 512)
    with pytest.raises(DIPError, match="no shipped image"):
        src_core.data_path("nothing.png")


def test_a_zarr_or_dask_stack_is_restored_slice_by_slice_like_one_in_memory(tmp_path):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    stack = (np.random.default_rng(0).random((3, 32, 32)) * 4000).astype(np.uint16)
    store = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=stack.shape, chunks=(1, 32, 32),
                            dtype=stack.dtype)
    store[...] = stack
    kwargs = dict(task="random", preset="cpu", scales=2, iterations=6, report_every=3, threads=1)
    here = src_core.restore(stack, **kwargs)
    problem = src_core.prepare(zarr.open_array(str(tmp_path / "s.zarr"), mode="r"), **kwargs)
    assert isinstance(problem.images, src_core.imaging.LazySlices)   # nothing was loaded whole
    lazy = src_core.restore(zarr.open_array(str(tmp_path / "s.zarr"), mode="r"), **kwargs)
    np.testing.assert_array_equal(lazy.image, here.image)
    assert lazy.image.dtype == np.uint16
    holes = da.from_array(np.where(stack > 3990, np.nan, stack.astype(np.float32)), chunks=(1, 32, 32))
    with pytest.raises(src_core.DIPError, match="NaN or inf values; a stack read slice by slice"):
        src_core.prepare(holes, **kwargs)


def test_a_lazy_stack_is_read_slice_by_slice_as_it_runs_and_keeps_the_input_where_stopped(tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    import threading

    stack = (np.random.default_rng(1).random((3, 32, 32)) * 4000).astype(np.uint16)
    store = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=stack.shape, chunks=(1, 32, 32),
                            dtype=stack.dtype)
    store[...] = stack
    reads, seen = [], {}
    real = src_core.imaging.LazySlices._read
    monkeypatch.setattr(src_core.imaging.LazySlices, "_read", lambda self, i: reads.append(i) or real(self, i))
    stop = threading.Event()

    def callback(event, index):
        seen.setdefault(index, sorted(set(reads)))
        if index == 1:
            stop.set()  # slice 1 ends after this iteration; slice 2 never starts

    result = src_core.restore(zarr.open_array(str(tmp_path / "s.zarr"), mode="r"), task="random", preset="cpu",
                              scales=2, iterations=6, report_every=3, threads=1, callback=callback, stop=stop)
    assert seen[0] == [0] and seen[1] == [0, 1]   # each slice read when its turn came, not before
    assert result.stopped and [h.part for h in result.histories] == [0, 1]
    np.testing.assert_array_equal(result.image[2], stack[2])  # not run: the input, unmasked
