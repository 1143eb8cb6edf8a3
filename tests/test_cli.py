import json

import numpy as np
import pytest

from src_core.cli import main
from src_core.io import read_image, write_image

SMALL = ["--preset", "cpu", "--set", "scales=2", "--set", "down_channels=8", "--set", "up_channels=8",
         "--iterations", "6", "--report-every", "3", "--device", "cpu", "--quiet"]


@pytest.fixture
def photo(tmp_path):
    img = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    return write_image(tmp_path / "photo.png", img)


def test_random_writes_image_history_and_psnr_plot(tmp_path, photo, capsys):
    out = tmp_path / "out"
    assert main(["random", str(photo), "-o", str(out), "--fraction", "0.3", "--mask-seed", "2", *SMALL]) == 0
    restored = read_image(out / "photo_restored.png")
    assert restored.shape == (32, 32) and restored.dtype == np.uint8
    record = json.loads((out / "photo_history.json").read_text())
    assert record["config"]["iterations"] == 6 and record["config"]["network"]["scales"] == 2
    assert record["slices"][0]["psnr"][-1] is not None
    assert (out / "photo_psnr.png").stat().st_size > 1000
    assert "photo_restored.png" in capsys.readouterr().out


def test_inpaint_with_mask_file_and_config_round_trip(tmp_path, photo):
    mask = np.full((32, 32), 255, np.uint8)
    mask[8:16, 8:16] = 0
    mask_path = write_image(tmp_path / "mask.png", mask)
    out = tmp_path / "a"
    assert main(["inpaint", str(photo), "--mask", str(mask_path), "-o", str(out), *SMALL]) == 0
    first = read_image(out / "photo_restored.png")
    # repeat exactly from the written history
    out2 = tmp_path / "b"
    assert main(["inpaint", str(photo), "--mask", str(mask_path), "-o", str(out2), "--quiet",
                 "--config", str(out / "photo_history.json")]) == 0
    assert np.array_equal(first, read_image(out2 / "photo_restored.png"))


def test_denoise_runs(tmp_path, photo):
    assert main(["denoise", str(photo), "-o", str(tmp_path), *SMALL]) == 0
    assert (tmp_path / "photo_restored.png").exists()


@pytest.mark.parametrize("args,words", [
    (["inpaint", "missing.png", "--mask", "missing_mask.png"], "image file not found: missing.png"),
    (["random", "{photo}", "--set", "depth=3"], "unknown setting 'depth'"),
    (["random", "{photo}", "--set", "noequals"], "--set takes KEY=VALUE"),
    (["random", "{photo}", "--device", "cuda:7"], "not available"),
    (["inpaint", "{photo}", "--mask", "nope.png"], "mask file not found: nope.png"),
    (["denoise", "{photo}", "--reference", "nope.png"], "reference file not found: nope.png"),
    (["denoise", "{folder}"], "is a folder, not a file; give one file (`dip batch` takes folders"),
    (["random", "{photo}", "--name", "../elsewhere"], "--name is the outputs' file name stem, not a path"),
    (["random", "{photo}", "--overlap", "8"], "--overlap is how much neighbouring tiles share: it needs --tile"),
    (["inpaint", "{photo}", "--mask", "{photo}", "--classical", "bicubic"], "'bicubic' needs a size-changing"),
    (["sr", "{photo}", "--classical", "biharmonic"], "'biharmonic' needs an answer of the observation's size"),
    (["denoise", "{photo}", "--channel-axis", "last"], "--channel-axis takes 'auto', 'none' or an axis number"),
    (["random", "{photo}", "--budget", "soon"], "budget is a time: seconds, or a text like '90s'"),
    (["random", "{photo}", "--budget", "5s", "--iterations", "3"], "give --iterations or --budget, not both"),
])
def test_errors_are_one_clear_line_and_exit_code_2(args, words, photo, capsys, tmp_path):
    args = [a.replace("{photo}", str(photo)).replace("{folder}", str(tmp_path)) for a in args]
    assert main(args + ["-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_engine_errors_are_said_in_the_command_lines_words(tmp_path, photo, capsys):
    stack = tmp_path / "stack.npy"
    np.save(stack, np.zeros((2, 2, 32, 32), np.float32))
    black = write_image(tmp_path / "black.png", np.zeros((32, 32), np.uint8))
    cases = [(["random", str(photo), "--fraction", "1.0"], "--fraction must be a number in [0, 1)"),
             (["denoise", str(stack)], "pass --channel-axis (an axis number, or none for no channels)"),
             (["inpaint", str(photo), "--mask", str(black)], "--mask-observed black if yours is the other way")]
    for args, words in cases:
        assert main(args + ["-o", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert words in err, err
        assert "channel_axis" not in err and "missing_fraction" not in err


def test_an_output_folder_that_is_a_file_is_named_as_such(photo, capsys):
    assert main(["denoise", str(photo), "-o", str(photo), *SMALL]) == 2
    assert "is a file; -o takes the folder the outputs go into" in capsys.readouterr().err


def test_a_pngs_alpha_channel_is_kept_as_it_is_and_not_restored(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rgba = (rng.random((32, 32, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[:8, :, 3] = 0  # a transparent band
    path = write_image(tmp_path / "logo.png", rgba)
    args = [a for a in SMALL if a != "--quiet"]
    assert main(["random", str(path), "-o", str(tmp_path / "o"), *args]) == 0
    assert "has an alpha channel: it is kept as it is" in capsys.readouterr().out
    for kind in ("restored", "corrupted", "classical"):
        written = read_image(tmp_path / "o" / f"logo_{kind}.png")
        assert written.shape == (32, 32, 4)
        np.testing.assert_array_equal(written[..., 3], rgba[..., 3])
    history = json.loads((tmp_path / "o" / "logo_history.json").read_text())
    assert history["slices"][0]["summary"]["psnr_answer"] is not None  # compared on colour only
    grey_alpha = np.stack([rgba[..., 0], rgba[..., 3]], axis=-1)
    path = write_image(tmp_path / "grey.png", grey_alpha)
    assert main(["sr", str(path), "--factor", "2", "-o", str(tmp_path / "g"), *SMALL]) == 0
    big = read_image(tmp_path / "g" / "grey_restored.png")
    assert big.shape == (64, 64, 2) and (big[:16, :, 1] == 0).all() and (big[16:, :, 1] == 255).all()


def test_an_imagej_hyperstack_is_read_by_its_axes_and_its_metadata_goes_with_the_answer(tmp_path):
    """Z, C, Y, X as the file says (no --channel-axis needed); the answer opens in Fiji or napari
    at the input's scale: ImageJ axes, z spacing and unit, and pixel size (finer after sr)."""
    import tifffile

    stack = (np.random.default_rng(0).random((2, 2, 32, 32)) * 4000 + 100).astype(np.uint16)
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(10, 10),
                     metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "um"})
    assert main(["denoise", str(path), "-o", str(tmp_path / "d"), *SMALL]) == 0
    assert main(["sr", str(path), "--factor", "2", "-o", str(tmp_path / "s"), *SMALL]) == 0
    for folder, side, pixels_per_um in (("d", 32, 10), ("s", 64, 20)):
        with tifffile.TiffFile(tmp_path / folder / "cells_restored.tif") as tif:
            assert tif.is_imagej and tif.series[0].axes == "ZCYX"
            assert tif.series[0].shape == (2, 2, side, side) and tif.series[0].dtype == np.uint16
            assert tif.imagej_metadata["spacing"] == 0.5 and tif.imagej_metadata["unit"] == "um"
            assert tif.pages[0].tags["XResolution"].value == (pixels_per_um, 1)
    assert tifffile.imread(path).tobytes() == stack.tobytes()  # the input is as it was


def test_a_plain_tiffs_pixel_size_goes_with_the_answer_but_its_axes_are_not_trusted(tmp_path):
    """A TIFF that is neither ImageJ nor OME still states its resolution: the answer keeps it
    (2x finer after sr --factor 2); a trailing axis of 3 is colour, as for any file."""
    import tifffile

    rgb = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, rgb, resolution=(40, 1), resolutionunit="CENTIMETER")
    assert main(["sr", str(path), "--factor", "2", "-o", str(tmp_path / "s"), *SMALL]) == 0
    with tifffile.TiffFile(tmp_path / "s" / "scan_restored.tif") as tif:
        assert not (tif.is_imagej or tif.is_ome) and tif.series[0].shape == (64, 64, 3)
        assert tif.pages[0].tags["XResolution"].value == (80, 1)
        assert tif.pages[0].tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
    assert tifffile.imread(path).tobytes() == rgb.tobytes()


def test_presets_listed(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "table1" in out and "lr=0.001" in out and "library" in out


def test_every_registered_task_is_a_subcommand():
    from src_core.cli import build_parser
    from src_core.tasks import TASKS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(TASKS) <= set(sub.choices)


def test_sr_writes_a_larger_answer_and_the_bicubic_baseline(tmp_path, photo, capsys):
    out = tmp_path / "sr"
    assert main(["sr", str(photo), "--factor", "2", "-o", str(out), *SMALL]) == 0
    assert read_image(out / "photo_restored.png").shape == (64, 64)
    assert read_image(out / "photo_classical.png").shape == (64, 64)
    assert read_image(out / "photo_corrupted.png").shape == (32, 32)
    record = json.loads((out / "photo_history.json").read_text())
    assert record["slices"][0]["summary"]["classical_method"] == "bicubic"


def test_deconvolve_takes_a_psf_file_or_a_sigma_and_refuses_a_bad_one(tmp_path, photo, capsys):
    psf = np.zeros((7, 7), np.float32)
    psf[2:5, 2:5] = 1
    psf_path = write_image(tmp_path / "psf.tif", psf)
    assert main(["deconvolve", str(photo), "--psf", str(psf_path), "-o", str(tmp_path / "a"), *SMALL]) == 0
    assert read_image(tmp_path / "a" / "photo_restored.png").shape == (32, 32)
    assert main(["deconvolve", str(photo), "--psf", "1.5", "-o", str(tmp_path / "b"), *SMALL]) == 0
    assert main(["deconvolve", str(photo), "--psf", "-1", "-o", str(tmp_path / "c"), *SMALL]) == 2
    assert "sigma" in capsys.readouterr().err
    assert not (tmp_path / "c" / "photo_restored.png").exists()


def test_tiles_from_the_command_line_run_only_the_damaged_tiles(tmp_path, capsys):
    y, x = np.mgrid[0:96, 0:96] / 95.0
    img = ((0.5 + 0.3 * np.sin(5 * x) * np.cos(3 * y)) * 255).astype(np.uint8)
    photo = write_image(tmp_path / "big.png", img)
    mask = np.full((96, 96), 255, np.uint8)
    mask[84:92, 84:92] = 0  # in the last tile only (tiles start at 0, 24, 48)
    mask_path = write_image(tmp_path / "mask.png", mask)
    out = tmp_path / "out"
    assert main(["inpaint", str(photo), "--mask", str(mask_path), "--tile", "48", "--overlap", "12",
                 "-o", str(out), *SMALL]) == 0
    restored = read_image(out / "big_restored.png")
    assert restored.shape == (96, 96) and np.array_equal(restored[mask > 0], img[mask > 0])
    assert read_image(out / "big_classical.png").shape == (96, 96)  # biharmonic, tiled alike
    said = capsys.readouterr().out
    assert "1 ran" in said and "inpaint in 1 of 9 tile(s) of 48 px with preset 'cpu': about" in said
    assert "s/it x 6 it on cpu" in said  # the estimate counts the tiles that run
    assert not (out / "big.checkpoints").exists()  # removed once the outputs are written
    assert main(["inpaint", str(photo), "--mask", str(mask_path), "--tile", "big", "-o", str(out), *SMALL]) == 2
    assert "--tile takes" in capsys.readouterr().err
    assert main(["inpaint", str(photo), "--mask", str(mask_path), "--tile", "48", "--resume", "-o", str(out),
                 "--overwrite", *SMALL]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_a_tiff_stack_is_tiled_slice_by_slice_from_the_command_line(tmp_path, capsys):
    import tifffile

    y, x = np.mgrid[0:96, 0:96] / 95.0
    stack = np.stack([((0.5 + 0.3 * np.sin((5 + k) * x) * np.cos(3 * y)) * 255).astype(np.uint8) for k in range(2)])
    tifffile.imwrite(tmp_path / "zs.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    mask = np.full((96, 96), 255, np.uint8)  # one 2D mask file for every slice
    mask[84:92, 84:92] = 0  # in each slice's last tile
    mask_path = write_image(tmp_path / "holes.png", mask)
    out = tmp_path / "out"
    assert main(["inpaint", str(tmp_path / "zs.tif"), "--mask", str(mask_path), "--tile", "48",
                 "--overlap", "12", "-o", str(out), *SMALL]) == 0
    said = capsys.readouterr().out
    assert "inpaint in 2 of 18 tile(s) (9 a slice) of 48 px" in said and "(slice 0: [8]; slice 1: [8])" in said
    restored = tifffile.imread(out / "zs_restored.tif")
    assert restored.shape == stack.shape and np.array_equal(restored[:, mask > 0], stack[:, mask > 0])
    assert not np.array_equal(restored[:, mask == 0], stack[:, mask == 0])


def test_a_run_too_large_for_the_device_is_refused_first_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    photo = write_image(tmp_path / "photo.png", np.full((64, 64), 128, np.uint8))
    monkeypatch.setattr("src_core.speed.available_memory", lambda device: 2**20)
    out = tmp_path / "out"
    assert main(["random", str(photo), "-o", str(out), *SMALL]) == 2
    captured = capsys.readouterr()
    assert "restore it in tiles" in captured.err and "with preset" not in captured.out  # no estimate first
    assert not (out / "photo.checkpoints").exists()
    monkeypatch.undo()
    (out / "photo.checkpoints").mkdir()  # an empty folder is not an interrupted run
    assert main(["random", str(photo), "-o", str(out), *SMALL]) == 0
