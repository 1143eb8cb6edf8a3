"""Batches on Dask distributed: the same answers as single runs, resume, failures kept apart."""

import json

import numpy as np
import pytest

import src_core
from src_core import DIPError
from src_core.batch import collect, restore_many
from src_core.io import read_image, write_image

distributed = pytest.importorskip("distributed")

TINY = dict(preset="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=6,
            report_every=3, device="cpu")


@pytest.fixture(scope="module")
def client():
    # worker processes, as in use: torch's thread count is per process, so runs in threads of
    # one process would change each other's arithmetic
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        write_image(src / f"img{k}.png", (rng.random((32, 32)) * 255).astype(np.uint8))
        mask = np.full((32, 32), 255, np.uint8)
        mask[8 + k:16 + k, 8:16] = 0
        write_image(src / f"img{k}_mask.png", mask)
    return src


def test_batch_equals_single_runs_and_resumes(client, folder, tmp_path):
    items = collect(folder, mask_pattern="{stem}_mask.png")
    assert [i.name for i in items] == ["img0", "img1", "img2"]
    out = tmp_path / "out"
    summary = restore_many(items, out, client=client, task="inpaint", **TINY)
    assert sorted(e["name"] for e in summary.done) == ["img0", "img1", "img2"] and not summary.failed
    single = src_core.restore(read_image(folder / "img1.png"), src_core.load_mask(folder / "img1_mask.png"),
                              task="inpaint", threads=1, **TINY)
    assert np.array_equal(read_image(out / "img1_restored.png"), single.image)
    history = json.loads((out / "img1_history.json").read_text())
    assert history["batch_fingerprint"] and history["config"]["iterations"] == 6
    again = restore_many(items, out, client=client, task="inpaint", **TINY)
    assert sorted(again.skipped) == ["img0", "img1", "img2"] and not again.done
    before = (out / "img1_restored.png").read_bytes()
    with pytest.raises(DIPError, match="3 image.*from other settings.*overwrite"):
        restore_many(items, out, client=client, task="inpaint", **dict(TINY, iterations=4))
    assert (out / "img1_restored.png").read_bytes() == before  # refused before any work
    changed = restore_many(items, out, client=client, task="inpaint", overwrite=True, **dict(TINY, iterations=4))
    assert len(changed.done) == 3  # other settings: run again, never mixed


def test_a_failing_item_does_not_stop_the_others(client, folder, tmp_path):
    (folder / "broken.png").write_text("not an image")
    items = collect([folder / "img0.png", folder / "broken.png"])
    summary = restore_many(items, tmp_path / "out", client=client, task="denoise", **TINY)
    assert [e["name"] for e in summary.done] == ["img0"]
    assert [e["name"] for e in summary.failed] == ["broken"] and "broken.png" in summary.failed[0]["error"]
    assert (tmp_path / "out" / "img0_restored.png").is_file()
    assert json.loads((tmp_path / "out" / "batch_summary.json").read_text())["failed"][0]["name"] == "broken"


def test_bad_batches_are_refused_before_any_work(folder, tmp_path):
    with pytest.raises(DIPError, match="no image found"):
        collect(tmp_path / "nothing*.png")
    (folder / "lonely.png").write_bytes((folder / "img0.png").read_bytes())
    with pytest.raises(DIPError, match="lack a file they need: lonely.png \\(no lonely_mask.png\\)"):
        collect(folder, mask_pattern="{stem}_mask.png")
    items = collect(folder / "img0.png")
    with pytest.raises(DIPError, match="input folder"):
        restore_many(items, folder, task="denoise", **TINY)
    with pytest.raises(DIPError, match="lr must be"):
        restore_many(items, tmp_path / "o", task="denoise", **dict(TINY, lr=-1))
    with pytest.raises(DIPError, match="needs a mask for every image"):
        restore_many(items, tmp_path / "o", task="inpaint", **TINY)
    with pytest.raises(DIPError, match="cannot reach the Dask scheduler"):
        src_core.batch.connect("tcp://127.0.0.1:9")


def test_dip_batch_command_line(folder, tmp_path, capsys):
    from src_core.cli import main

    args = ["batch", str(folder / "img0.png"), str(folder / "img1.png"), "-o", str(tmp_path / "out"),
            "--task", "denoise", "--preset", "cpu", "--set", "scales=2", "--set", "down_channels=8",
            "--set", "up_channels=8", "--iterations", "4", "--device", "cpu", "--workers", "1", "--quiet"]
    assert main(args) == 0
    assert "2 restored, 0 already done, 0 failed" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 restored, 2 already done" in capsys.readouterr().out
    assert main(["batch", str(folder), "-o", str(tmp_path / "o2"), "--scheduler", "tcp://127.0.0.1:9",
                 "--quiet"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    assert main(["batch", str(folder), "-o", str(tmp_path / "o3"), "--workers", "0"]) == 2
    out, err = capsys.readouterr()
    assert "passing over 2 entries that are not images (notes.txt, sub/)" in out
    assert "workers must be a whole number >= 1" in err


def test_a_batch_reads_each_file_as_a_single_run_does(client, tmp_path):
    """Masks whose black is observed, each image's clean reference by name, a PNG's alpha set
    aside and put back: the batch's answer is a single run's, and its history has the PSNR."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    clean = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:4] = 0
    write_image(src / "leaf.png", np.concatenate([noisy, alpha[..., None]], axis=-1))
    write_image(src / "leaf_clean.png", clean)
    holes = np.zeros((32, 32), np.uint8)
    holes[10:20, 10:20] = 255  # white = missing here
    write_image(src / "leaf_holes.png", holes)
    items = collect(src, mask_pattern="{stem}_holes.png", reference_pattern="{stem}_clean.png")
    assert [(i.name, i.reference.name) for i in items] == [("leaf", "leaf_clean.png")]
    out = tmp_path / "out"
    summary = restore_many(items, out, client=client, task="inpaint", mask_observed="black", **TINY)
    assert not summary.failed and summary.done[0]["psnr"] is not None
    written = read_image(out / "leaf_restored.png")
    assert written.shape == (32, 32, 4) and np.array_equal(written[..., 3], alpha)
    single = src_core.restore(noisy, holes == 0, task="inpaint", reference=clean, threads=1, **TINY)
    assert np.array_equal(written[..., :3], single.image)
    history = json.loads((out / "leaf_history.json").read_text())
    assert history["reference"].endswith("leaf_clean.png")
    assert summary.done[0]["psnr"] == pytest.approx(single.history.final_psnr)
    (src / "bare.png").write_bytes((src / "leaf_clean.png").read_bytes())
    with pytest.raises(DIPError, match=r"bare.png \(no bare_holes.png nor bare_clean.png\)"):
        collect(src, mask_pattern="{stem}_holes.png", reference_pattern="{stem}_clean.png")
    with pytest.raises(DIPError, match="mask_observed must be 'white' or 'black'"):
        restore_many(items, out, task="inpaint", mask_observed="dark", **TINY)


def test_dip_batch_passes_the_file_options_on(folder, tmp_path, monkeypatch):
    from src_core import batch
    from src_core.cli import main

    seen = {}
    monkeypatch.setattr(batch, "restore_many", lambda items, out, **kw: seen.update(kw) or batch.BatchSummary())
    assert main(["batch", str(folder), "-o", str(tmp_path / "o"), "--mask-pattern", "{stem}_mask.png",
                 "--quiet"]) == 0
    assert "mask_observed" not in seen and "channel_axis" not in seen  # the defaults: old batches stay the same
    assert main(["batch", str(folder), "-o", str(tmp_path / "o"), "--mask-pattern", "{stem}_mask.png",
                 "--mask-observed", "black", "--channel-axis", "none", "--quiet"]) == 0
    assert seen["mask_observed"] == "black" and seen["channel_axis"] is None


def test_an_item_whose_worker_dies_is_run_again(folder, tmp_path):
    """Kill a worker process while it restores an item: the scheduler gives the item to a
    worker again, and every item ends restored."""
    import os
    import threading
    import time

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:
        items = collect(folder, mask_pattern="{stem}_mask.png")
        out = {}
        slow = dict(TINY, iterations=400, report_every=100)
        runner = threading.Thread(target=lambda: out.update(summary=restore_many(
            items, tmp_path / "out", client=c, task="inpaint", **slow)))
        runner.start()
        busy = {}
        deadline = time.time() + 60
        while not busy and time.time() < deadline:
            busy = {w: keys for w, keys in c.processing().items() if keys}
            time.sleep(0.05)
        assert busy, "no item started"
        victim = next(iter(busy))
        try:
            c.run(os._exit, 1, workers=[victim])  # the call dies with its worker
        except Exception:
            pass
        runner.join(timeout=240)
        assert victim not in c.scheduler_info()["workers"]  # it really died (the nanny started a new one)
    cluster.close()
    summary = out["summary"]
    assert sorted(e["name"] for e in summary.done) == ["img0", "img1", "img2"] and not summary.failed


def test_a_tiff_stack_is_one_item_a_page_and_comes_back_as_a_stack(client, tmp_path):
    import tifffile

    frames = (np.random.default_rng(1).random((3, 32, 32)) * 60000).astype(np.uint16)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "movie.tif", frames, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "TYX", "unit": "um"})
    tifffile.imwrite(src / "movie_clean.tif", frames[::-1].copy(), imagej=True, metadata={"axes": "TYX"})
    items = collect(src / "movie.tif", reference_pattern="{stem}_clean.tif")
    assert [(i.name, i.page) for i in items] == [("movie_p00000", 0), ("movie_p00001", 1), ("movie_p00002", 2)]
    assert np.array_equal(src_core.batch.read_item(items[1]), frames[1])
    image, reference, _, _ = src_core.batch.read_pair(items[0])
    assert np.array_equal(image, frames[0]) and np.array_equal(reference, frames[2])  # page by page
    items = collect(src / "movie.tif")
    summary = restore_many(items, tmp_path / "out", client=client, task="denoise", **TINY)
    assert len(summary.done) == 3 and summary.stacks == [str(tmp_path / "out" / "movie_restored.tif")]
    with tifffile.TiffFile(tmp_path / "out" / "movie_restored.tif") as tif:
        out = tif.asarray()
        assert out.shape == frames.shape and out.dtype == np.uint16
        x = tif.pages[0].tags["XResolution"].value
        assert abs(x[0] / x[1] - 1 / 0.65) < 1e-3  # the pixel size is kept
    single = src_core.restore(frames[2], task="denoise", threads=1, **TINY).image
    assert np.array_equal(out[2], single)


def test_an_ome_tiff_comes_back_with_its_axes_and_pixel_size(client, tmp_path):
    import tifffile

    frames = (np.random.default_rng(3).random((2, 2, 32, 32)) * 4000).astype(np.uint16)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "cells.ome.tif", frames, ome=True,
                     metadata={"axes": "TZYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "PhysicalSizeZ": 2.0})
    items = collect(src)
    assert len(items) == 4
    summary = restore_many(items, tmp_path / "out", client=client, task="denoise", **TINY)
    assert summary.stacks == [str(tmp_path / "out" / "cells_restored.ome.tif")]
    with tifffile.TiffFile(summary.stacks[0]) as tif:
        assert tif.is_ome and tif.series[0].axes == "TZYX" and tif.series[0].shape == frames.shape
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        assert (pixels["PhysicalSizeX"], pixels["PhysicalSizeZ"]) == (0.65, 2.0)
        out = tif.asarray()
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[1, 0], src_core.restore(frames[1, 0], task="denoise", threads=1, **TINY).image)
    # super-resolution: the same axes, Y and X twice as many pixels, each half the size
    summary = restore_many(items, tmp_path / "sr", client=client, task="sr", factor=2, **TINY)
    with tifffile.TiffFile(summary.stacks[0]) as tif:
        assert tif.series[0].axes == "TZYX" and tif.series[0].shape == (2, 2, 64, 64)
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        assert (pixels["PhysicalSizeX"], pixels["PhysicalSizeZ"]) == (0.325, 2.0)


def group_array(group, name, shape, chunks, dtype):
    """A new array in a Zarr group, with zarr 3's API or zarr 2's (Python 3.10's newest)."""
    make = getattr(group, "create_array", None) or group.create_dataset
    return make(name, shape=shape, chunks=chunks, dtype=dtype)


@pytest.mark.parametrize("ome", [False, True])
def test_a_zarr_array_is_one_item_a_plane_and_comes_back_as_zarr(client, tmp_path, ome):
    zarr = pytest.importorskip("zarr")
    frames = (np.random.default_rng(2).random((3, 32, 32)) * 60000).astype(np.uint16)
    store = tmp_path / "in" / "movie.zarr"
    if ome:  # an OME-Zarr group: the full-resolution level "0" is restored, level "1" made from it
        group = zarr.open_group(str(store), mode="w")
        group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}, {"path": "1"}]}]
        group_array(group, "0", frames.shape, (1, 32, 32), frames.dtype)[:] = frames
        group_array(group, "1", (3, 16, 16), (1, 16, 16), frames.dtype)[:] = frames[:, ::2, ::2]
    else:
        zarr.open_array(str(store), mode="w", shape=frames.shape, chunks=(1, 16, 32), dtype=frames.dtype)[:] = frames
    items = collect(tmp_path / "in")
    assert [(i.name, i.page) for i in items] == [("movie_p00000", 0), ("movie_p00001", 1), ("movie_p00002", 2)]
    summary = restore_many(items, tmp_path / "out", client=client, task="denoise", **TINY)
    assert len(summary.done) == 3 and summary.stacks == [str(tmp_path / "out" / "movie_restored.zarr")]
    out = zarr.open(summary.stacks[0], mode="r")
    if ome:  # an OME-Zarr group again, with its attributes and both levels
        assert out.attrs["multiscales"] == group.attrs["multiscales"]
        smaller, out = out["1"], out["0"]
        assert smaller.shape == (3, 16, 16) and smaller.dtype == frames.dtype
        assert abs(float(smaller[1].mean()) - float(np.asarray(out[1]).mean())) < 0.02 * 60000
    assert out.shape == frames.shape and out.dtype == frames.dtype
    assert np.array_equal(out[1], src_core.restore(frames[1], task="denoise", threads=1, **TINY).image)


def test_dip_batch_against_a_given_scheduler(client, folder, tmp_path, capsys, monkeypatch):
    from src_core.cli import main

    made = []
    real = src_core.batch.connect
    monkeypatch.setattr(src_core.batch, "connect", lambda address: made.append(real(address)) or made[-1])
    assert main(["batch", str(folder / "img2.png"), "-o", str(tmp_path / "out"), "--task", "denoise",
                 "--scheduler", client.scheduler.address, "--preset", "cpu", "--set", "scales=2",
                 "--iterations", "4", "--device", "cpu", "--quiet"]) == 0
    assert "1 restored" in capsys.readouterr().out and (tmp_path / "out" / "img2_restored.png").is_file()
    # the command's client is closed: left open, it would keep dask's default scheduler pointing at
    # a cluster after the command (napari's own reads of dask layers then fail)
    assert len(made) == 1 and made[0].status == "closed"


def test_tiles_and_slices_on_a_cluster_equal_the_runs_here(client):
    y, x = np.mgrid[0:96, 0:96] / 95.0
    image = ((0.5 + 0.3 * np.sin(5 * x) * np.cos(3 * y)) * 255).astype(np.uint8)
    mask = np.ones((96, 96), bool)
    mask[5:12, 5:12] = False
    mask[80:90, 80:90] = False
    tiled = dict(tile=64, overlap=16, threads=1, **TINY)
    here = src_core.restore_tiled(image, mask, **tiled)
    there = src_core.restore_tiled(image, mask, client=client, **tiled)
    np.testing.assert_array_equal(there.image, here.image)
    np.testing.assert_array_equal(there.classical, here.classical)
    assert len(there.histories) == 2
    stack = np.stack([image[:32, :32], image[32:64, :32], image[64:, :32]])
    # a cluster's slices run at once, so each starts from random weights (no warm start)
    here = src_core.restore(stack, task="random", threads=1, warm_start=0, **TINY)
    there = src_core.restore(stack, task="random", client=client, **TINY)
    np.testing.assert_array_equal(there.image, here.image)
    assert [h.final_psnr for h in there.histories] == [h.final_psnr for h in here.histories]
    assert any("on a cluster every slice runs at once" in n for n in there.notes)


def test_a_stop_on_the_cluster_keeps_each_finished_part_and_names_the_others(client):
    """Stopped as the first answer arrives: every slice is either answered whole or named in
    the note as not restored (never both, never neither), and nothing of the run stays on the
    cluster."""
    import threading
    import time

    from src_core.parts import _named

    rng = np.random.default_rng(0)
    stack = (rng.random((6, 32, 32)) * 255).astype(np.uint8)
    problem = src_core.prepare(stack, task="random", threads=1, **dict(TINY, iterations=60))
    stop = threading.Event()
    answered, stopped = [], []
    for kind, index, payload in problem.solve(stop=stop, client=client):
        if kind == "answer":
            assert payload[1].timings["iterations"] == 60  # a whole run: the cluster never cuts one short
            answered.append(index)
            stop.set()
        elif kind == "stopped":
            stopped.append(index)
    assert answered and len(stopped) == 1 and len(set(answered)) == len(answered)
    left = sorted(set(range(6)) - set(answered))
    notes = [n for n in problem.notes if n.startswith("stopped:")]
    assert notes == ([f"stopped: {_named('slice', left)} the input, not restored (cancelled on the cluster)"]
                     if left else [])
    assert stopped[0] == (left[0] if left else -1)

    def ours(dask_scheduler):
        return [str(key) for key in dask_scheduler.tasks if str(key).startswith("dip-slice")]

    deadline = time.monotonic() + 20
    while client.run_on_scheduler(ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.run_on_scheduler(ours) == []


def test_a_single_run_refuses_an_unreachable_scheduler(tmp_path, capsys):
    from src_core.cli import main

    write_image(tmp_path / "img.png", np.full((32, 32), 128, np.uint8))
    code = main(["random", str(tmp_path / "img.png"), "-o", str(tmp_path / "out"), "--tile", "32",
                 "--scheduler", "tcp://127.0.0.1:1", "--preset", "cpu", "--iterations", "2"])
    assert code == 2 and "cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "img_restored.png").exists()


def test_a_batch_can_tile_each_image_on_its_worker(client, folder, tmp_path):
    items = collect(folder, mask_pattern="{stem}_mask.png")[:2]
    summary = restore_many(items, tmp_path / "out", client=client, task="inpaint", tile=16, overlap=4, **TINY)
    assert len(summary.done) == 2 and not summary.failed
    history = json.loads((tmp_path / "out" / "img0_history.json").read_text())
    assert any(n.startswith("tiled:") for n in history["notes"])
    tiled = src_core.restore_tiled(read_image(folder / "img0.png"), src_core.load_mask(folder / "img0_mask.png"),
                                   tile=16, overlap=4, threads=1, **TINY)
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "img0_restored.png"), tiled.image)
    with pytest.raises(DIPError, match="tile must be"):
        restore_many(items, tmp_path / "out2", client=client, task="inpaint", tile=3, **TINY)


def test_a_zarr_store_as_the_output_is_refused_before_any_work_and_left_as_it_was(tmp_path, capsys):
    """-o (or output_dir) naming a Zarr store, the input's or another: the outputs would become
    nodes of the user's store, so it is refused before any run, and the store is unchanged."""
    zarr = pytest.importorskip("zarr")
    from src_core.cli import main

    store = tmp_path / "movie.zarr"
    zarr.open_array(str(store), mode="w", shape=(2, 32, 32), chunks=(1, 32, 32), dtype="uint8")[:] = 7
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with pytest.raises(DIPError, match="is a Zarr store; the outputs would be written into it"):
        restore_many(collect(store), store, task="denoise", **TINY)
    assert main(["batch", str(store), "-o", str(store), "--task", "denoise"]) == 2
    assert "is a Zarr store" in capsys.readouterr().err
    photo = write_image(tmp_path / "photo.png", (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8))
    assert main(["random", str(photo), "-o", str(store), "--iterations", "1"]) == 2
    assert "is a Zarr store" in capsys.readouterr().err
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_super_resolution_of_an_ome_zarr_rewrites_every_level_larger_with_smaller_pixels(client, tmp_path):
    zarr = pytest.importorskip("zarr")
    frames = (np.random.default_rng(3).random((2, 32, 32)) * 250).astype(np.uint8)
    store = tmp_path / "in" / "cells.zarr"
    group = zarr.open_group(str(store), mode="w")
    axes = [{"name": "t", "type": "time"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [5.0, 0.4, 0.4]}]},
        {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [5.0, 0.8, 0.8]}]}]}]
    group_array(group, "0", frames.shape, (1, 32, 32), frames.dtype)[:] = frames
    group_array(group, "1", (2, 16, 16), (1, 16, 16), frames.dtype)[:] = frames[:, ::2, ::2]
    summary = restore_many(collect(tmp_path / "in"), tmp_path / "out", client=client, task="sr", factor=2,
                           **TINY)
    assert len(summary.done) == 2, summary.failed
    out = zarr.open(summary.stacks[0], mode="r")
    assert out["0"].shape == (2, 64, 64) and out["1"].shape == (2, 32, 32) and out["1"].dtype == np.uint8
    scales = [d["coordinateTransformations"][0]["scale"] for d in out.attrs["multiscales"][0]["datasets"]]
    assert scales == [[5.0, 0.2, 0.2], [5.0, 0.4, 0.4]]  # the same field of view, in pixels half the size
    assert group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [5.0, 0.4, 0.4]
    assert abs(float(np.asarray(out["1"][0]).mean()) - float(np.asarray(out["0"][0]).mean())) < 3
