"""Large images in tiles: the plan covers the image, blending leaves no seam, only damaged
inpainting tiles run, and the answer keeps the input's form."""

import numpy as np
import pytest

import src_core
from src_core import DIPError, tiled
from src_core.parts import PartAnswer
from src_core.tiles import plan, spans, tile_starts

TINY = dict(preset="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=10,
            report_every=5, device="cpu")


def test_the_plan_covers_every_pixel_with_positive_weights():
    for size, tile, overlap in ((600, 256, 64), (256, 256, 32), (100, 256, 32), (513, 128, 16)):
        starts = tile_starts(size, tile, overlap)
        covered = np.zeros(size, bool)
        for a, b in zip(starts, starts[1:]):
            assert a.stop - b.start >= overlap  # neighbours share at least the overlap
        for s in starts:
            covered[s] = True
            assert s.stop - s.start == min(tile, size)
        assert covered.all() and starts[-1].stop == size
    weights = np.zeros((300, 200))
    for rows, cols, w in plan((300, 200), 128, 32):
        assert w.min() > 0 and w.max() == 1
        weights[rows, cols] += w
    assert weights.min() > 0
    assert spans((300, 200), 128, 32) == [(rows, cols) for rows, cols, _ in plan((300, 200), 128, 32)]


def test_blending_leaves_no_seam(monkeypatch):
    """Each tile answers a different constant: the blend must change by at most what a
    raised cosine over the overlap allows, never step at a tile's edge."""
    calls = []

    def constant_per_tile(parts, **kwargs):
        for index, part in parts:
            calls.append(part.images.shape)
            value = np.float32(0.1 + 0.8 * (len(calls) % 2))  # alternate 0.1 and 0.9 between tiles
            yield "answer", index, PartAnswer(np.full_like(part.images[0], value), src_core.History())

    monkeypatch.setattr(tiled, "solve_parts", constant_per_tile)
    image = np.full((200, 180), 0.5, np.float32)
    overlap = 40
    result = src_core.restore_tiled(image, task="denoise", tile=96, overlap=overlap, **TINY)
    assert len(calls) == len(plan((200, 180), 96, overlap)) > 1
    out = result.image
    steepest = 0.8 * np.pi / (2 * overlap) * 1.05  # the largest slope of the cosine ramp, 5% slack
    assert np.abs(np.diff(out, axis=0)).max() <= steepest
    assert np.abs(np.diff(out, axis=1)).max() <= steepest


def test_inpainting_runs_only_the_damaged_tiles_and_keeps_the_rest(monkeypatch):
    y, x = np.mgrid[0:128, 0:128] / 127.0
    image = ((0.5 + 0.3 * np.sin(5 * x) * np.cos(3 * y)) * 255).astype(np.uint8)
    mask = np.ones((128, 128), bool)
    mask[5:15, 5:15] = False
    runs = []
    real = tiled.solve_parts

    def counting(parts, **kwargs):
        runs.extend(part.images.shape for _, part in parts)
        yield from real(parts, **kwargs)

    monkeypatch.setattr(tiled, "solve_parts", counting)
    result = src_core.restore_tiled(image, mask, tile=64, overlap=16, **TINY)
    assert runs == [(1, 1, 64, 64)]  # 9 tiles, one holds the hole
    assert result.image.dtype == np.uint8 and result.image.shape == image.shape
    assert np.array_equal(result.image[mask], image[mask])
    assert any("9 tile(s)" in n and "1 ran ([0])" in n for n in result.notes)
    assert len(result.histories) == 1


def test_a_tiled_answer_is_compared_with_the_classical_answer_tiled_alike():
    y, x = np.mgrid[0:96, 0:96] / 95.0
    image = ((0.5 + 0.3 * np.sin(5 * x) * np.cos(3 * y)) * 255).astype(np.uint8)
    mask = np.ones((96, 96), bool)
    mask[60:80, 60:80] = False
    result = src_core.restore_tiled(image, mask, reference=image, tile=48, overlap=12, **TINY)
    assert result.classical is not None and result.classical.shape == image.shape
    assert np.array_equal(result.classical[mask], image[mask])  # biharmonic keeps what it saw
    assert any(n.startswith("PSNR of the whole tiled answer") and "biharmonic answer tiled alike" in n
               for n in result.notes)
    bare = src_core.restore_tiled(image, mask, tile=48, overlap=12, classical=None, **TINY)
    assert bare.classical is None


def test_tiled_super_resolution_places_tiles_at_the_larger_scale():
    image = (np.random.default_rng(0).random((48, 40)) * 255).astype(np.uint8)
    result = src_core.restore_tiled(image, task="sr", factor=2, tile=32, overlap=8, **TINY)
    assert result.image.shape == (96, 80) and len(result.histories) == len(plan((48, 40), 32, 8))


@pytest.mark.parametrize("kwargs, words", [
    (dict(tile=3), "tile must be"),
    (dict(tile=64, overlap=40), "overlap must be"),
    (dict(tile=64, overlap=-1), "overlap must be"),
])
def test_bad_tiling_is_refused_before_any_run(kwargs, words):
    with pytest.raises(DIPError, match=words):
        src_core.restore_tiled(np.zeros((64, 64), np.float32), task="denoise", **TINY, **kwargs)


def test_a_stacks_slices_are_tiled_alike_only_damaged_tiles_run_and_resume_keeps_them(tmp_path, failing_part):
    y, x = np.mgrid[0:96, 0:96] / 95.0
    stack = np.stack([((0.5 + 0.3 * np.sin((5 + k) * x) * np.cos(3 * y)) * 255).astype(np.uint8)
                      for k in range(3)])
    mask = np.ones(stack.shape, bool)
    mask[0, 5:12, 5:12] = False     # slice 0, tile 0
    mask[2, 80:90, 80:90] = False   # slice 2, tile 3; slice 1 has no hole: none of its tiles runs
    failing_part.index = 2 * 4 + 3  # the part index of slice 2's tile 3
    kwargs = dict(tile=64, overlap=16, channel_axis=None, checkpoint_dir=tmp_path / "ck", **TINY)
    with pytest.raises(RuntimeError, match="simulated"):
        src_core.restore_tiled(stack, mask, **kwargs)
    assert failing_part.ran == [0, 11] and (tmp_path / "ck" / "tile-00000.done.npz").is_file()
    failing_part.fail, failing_part.ran[:] = False, []
    again = src_core.restore_tiled(stack, mask, **kwargs)
    assert failing_part.ran == [11]  # slice 0's tile was kept, not run again
    assert again.image.shape == stack.shape and again.image.dtype == np.uint8
    assert np.array_equal(again.image[1], stack[1]) and np.array_equal(again.image[mask], stack[mask])
    assert any("4 tile(s) per slice" in n and "2 ran (slice 0: [0]; slice 1: []; slice 2: [3])" in n
               for n in again.notes), again.notes
    # each slice's answer is that slice restored on its own in the same tiles
    alone = src_core.restore_tiled(stack[2], mask[2], tile=64, overlap=16, **TINY)
    np.testing.assert_array_equal(again.image[2], alone.image)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "auto"])
def test_auto_tile_is_the_largest_multiple_of_the_network_that_fits(monkeypatch, precision):
    """Sized by the memory model of the precision the run will use (bf16 halves the
    activations), against a fixed amount of free memory, so no CPU kind or load decides it."""
    from src_core.tiles import choose_tile

    free = 24 * 2**30
    monkeypatch.setattr(src_core.speed, "available_memory", lambda device: free)
    cfg = src_core.preset("cpu", precision=precision)
    device = src_core.resolve_device("cpu")
    side = choose_tile(cfg, 1, device)
    assert side % 2 ** cfg.network.scales == 0 and side >= cfg.network.min_size()
    amp = src_core.speed.resolve_precision(precision, device)
    need = src_core.speed.estimate_memory(cfg.network, 1, (side, side), amp)
    twice = src_core.speed.estimate_memory(cfg.network, 1, (2 * side, 2 * side), amp)
    assert need <= 0.5 * free < twice


def test_auto_tile_is_larger_in_bfloat16_than_in_float32(monkeypatch):
    from src_core.tiles import choose_tile

    monkeypatch.setattr(src_core.speed, "available_memory", lambda device: 24 * 2**30)
    device = src_core.resolve_device("cpu")
    sides = {p: choose_tile(src_core.preset("cpu", precision=p), 1, device) for p in ("float32", "bfloat16")}
    assert sides["bfloat16"] >= sides["float32"]


def test_finished_tiles_are_kept_and_a_later_call_skips_them(tmp_path, failing_part):
    y, x = np.mgrid[0:96, 0:96] / 95.0
    image = ((0.5 + 0.3 * np.sin(5 * x) * np.cos(3 * y)) * 255).astype(np.uint8)
    mask = np.ones((96, 96), bool)
    mask[5:12, 5:12] = False     # tile 0
    mask[80:90, 80:90] = False   # tile 3
    failing_part.index = 3
    kwargs = dict(tile=64, overlap=16, checkpoint_dir=tmp_path / "ck", **TINY)
    with pytest.raises(RuntimeError, match="simulated"):
        src_core.restore_tiled(image, mask, **kwargs)
    assert (tmp_path / "ck" / "tile-00000.done.npz").is_file()
    failing_part.fail, failing_part.ran[:] = False, []
    again = src_core.restore_tiled(image, mask, **kwargs)
    assert failing_part.ran == [3]                               # tile 0 was kept, not run again
    fresh = src_core.restore_tiled(image, mask, tile=64, overlap=16, **TINY)
    np.testing.assert_array_equal(again.image, fresh.image)
    with pytest.raises(DIPError, match="belongs to another image"):
        src_core.restore_tiled(image, mask, **{**kwargs, "seed": 3})
