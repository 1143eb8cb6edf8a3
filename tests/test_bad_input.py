"""Every bad input of the issue 9 audit: a clear DIPError before heavy work, or a correct result.

Each case failed before (a raw traceback, a silent wrong result, or a lost or
overwritten file).  The guard's cases are in test_guard.py.
"""

import json
import os
import signal
import threading

import numpy as np
import pytest

import src_core
from src_core import DIPEnsemble, DIPError, DIPRun, RunConfig, make_config, restore, text_mask
from src_core.cli import main
from src_core.io import read_image, write_image
from src_core.masks import load_mask

TINY = dict(preset="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=4,
            report_every=2, device="cpu", validate=0, classical=None)
SMALL = ["--preset", "cpu", "--set", "scales=2", "--set", "down_channels=8", "--set", "up_channels=8",
         "--iterations", "6", "--report-every", "3", "--device", "cpu", "--quiet"]


def image32(dtype=np.uint8):
    rng = np.random.default_rng(0)
    return (rng.random((32, 32)) * 200 + 20).astype(dtype)


# ---------------------------------------------------------------- settings (items 2 and 10)

@pytest.mark.parametrize("settings,words", [
    (dict(lr=float("inf")), "lr must be a positive number up to 10"),
    (dict(lr=1e308), "lr must be"),
    (dict(lr=float("1e999")), "lr must be"),
    (dict(lr=float("nan")), "lr must be"),
    (dict(sigma_p=float("inf")), "sigma_p must be"),
    (dict(input_scale=float("inf")), "input_scale must be"),
    (dict(sigma_p="abc"), "sigma_p must be"),
    (dict(ema="0.9"), "ema must be"),
    (dict(guard_drop_db="5"), "guard_drop_db must be"),
    (dict(guard="no"), "guard must be true or false"),
    (dict(guard_restore="moments"), r"guard_restore must be one of \('all', 'damped'\)"),
    (dict(early_stop="yes"), "early_stop must be true or false"),
    (dict(seed=2 ** 64), "seed must be a whole number"),
    (dict(seed=-1), "seed must be a whole number"),
    (dict(iterations=10 ** 12), "iterations must be a whole number"),
    (dict(iterations=2.5), "iterations must be a whole number"),
    (dict(scales=True), "scales must be whole numbers"),
    (dict(down_channels=[8, "x", 8, 8]), "down_channels must be whole numbers"),
    (dict(down_channels=10 ** 9), "down_channels must be whole numbers"),
    (dict(sigmoid="yes"), "sigmoid must be true or false"),
    (dict(upsample=["nearest"]), "upsample has 1 entries"),
    (dict(upsample=5), "upsample must be one of"),
])
def test_bad_numbers_and_types_are_refused_before_any_network(settings, words):
    with pytest.raises(DIPError, match=words):
        make_config("random", "cpu", **settings)


def test_config_may_be_a_dict_and_nothing_else():
    cfg = make_config("random", config=src_core.preset("cpu").to_dict(), iterations=3)
    assert cfg.iterations == 3
    with pytest.raises(DIPError, match="config must be a RunConfig or a dict"):
        make_config("random", config=5)
    with pytest.raises(DIPError, match="preset must be a preset name"):
        make_config("random", preset_name=3)


@pytest.mark.parametrize("content,words", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object of settings"),
    (b'"cpu"', "JSON object of settings"),
    (b"null", "JSON object of settings"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON|JSON object"),
    (bytes(range(256)), "not UTF-8"),
    (b'{"network": 5}', "'network' must be an object"),
    (b'{"network": {"scales": "five"}}', "scales must be whole numbers"),
    (b'{"lr": "fast"}', "lr must be"),
    (b'{"learning_rate": 1}', "unknown configuration fields"),
])
def test_broken_config_files_give_one_line(tmp_path, content, words):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(DIPError, match=words):
        RunConfig.load(path)


def test_broken_config_in_the_cli_is_exit_2_without_traceback(tmp_path, capsys):
    photo = write_image(tmp_path / "photo.png", image32())
    for content in (b"", b"{", b"[]", b'{"network": 5}'):
        (tmp_path / "c.json").write_bytes(content)
        assert main(["random", str(photo), "--config", str(tmp_path / "c.json"), "-o",
                     str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "dip: error:" in err and "Traceback" not in err
    assert main(["random", str(photo), "--config", str(tmp_path / "missing.json"), "-o",
                 str(tmp_path / "o"), "--quiet"]) == 2
    assert "cannot read the configuration" in capsys.readouterr().err
    assert main(["random", str(photo), "--set", "sigma_p=abc", "-o", str(tmp_path / "o"), "--quiet"]) == 2
    assert "sigma_p must be" in capsys.readouterr().err


def test_a_history_file_is_a_config_file(tmp_path):
    history = {"config": src_core.preset("cpu", iterations=7).to_dict(), "slices": []}
    (tmp_path / "h.json").write_text(json.dumps(history))
    assert RunConfig.load(tmp_path / "h.json").iterations == 7


# ---------------------------------------------------------------- arrays (items 9 and 10)

@pytest.mark.parametrize("kwargs,words", [
    (dict(image=np.zeros((0, 32), np.uint8)), "empty"),
    (dict(image=np.zeros((32, 0, 3), np.uint8)), "empty"),
    (dict(image=image32(), mask_seed=-1, task="random"), "mask seed"),
    (dict(image=image32(), mask_seed=1.5, task="random"), "mask seed"),
    (dict(image=image32(), missing_fraction="half", task="random"), "missing_fraction"),
    (dict(image=image32()[..., None].repeat(3, -1), channel_axis=1.5, task="random"), "channel_axis"),
    (dict(image=np.array([[-1.7e308, 1.7e308]] * 32 * 16).reshape(32, 32), task="random"),
     "range float64 cannot hold"),
])
def test_bad_arrays_are_refused_with_a_reason(kwargs, words):
    kwargs = dict(kwargs)
    image = kwargs.pop("image")
    kwargs.setdefault("task", "random")
    with pytest.raises(DIPError, match=words):
        restore(image, **{**TINY, **kwargs})


@pytest.mark.parametrize("channels", [1, 2])
def test_one_or_two_channels_last_are_channels_not_a_stack(channels):
    img = np.repeat(image32()[..., None], channels, axis=-1)
    result = restore(img, task="random", **TINY)
    assert result.image.shape == img.shape and len(result.histories) == 1


def test_a_network_too_deep_for_the_image_says_how_deep_fits():
    with pytest.raises(DIPError, match=r"use at most 4 scales \(scales=4\)"):
        restore(image32(), task="random", **{**TINY, "scales": 5})
    with pytest.raises(DIPError, match="too small for any network") as info:
        restore(np.zeros((3, 3), np.uint8), task="random", **{**TINY, "scales": 1})
    assert "fewer scales" not in str(info.value)


def test_a_float_reference_for_a_uint8_image_is_scaled_by_its_own_meaning():
    clean = image32()
    noisy = np.clip(clean.astype(int) + 20, 0, 255).astype(np.uint8)
    as_uint8 = restore(noisy, task="denoise", reference=clean, **TINY)
    as_float = restore(noisy, task="denoise", reference=clean / 255.0, **TINY)
    assert as_float.history.summary["psnr_corrupted"] == pytest.approx(
        as_uint8.history.summary["psnr_corrupted"], abs=1e-4)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integers_at_their_maximum_do_not_wrap(dtype):
    info = np.iinfo(dtype)
    img = np.full((32, 32), info.max, dtype)
    img[:16] = info.max // 2
    out = src_core.imaging.Scaling.for_image(img).from_unit(np.array([1.0, 0.0]))
    assert out[0] > info.max // 2 and out[0] >= 0


def test_random_with_nan_does_not_blame_a_reference():
    img = image32().astype(np.float32)
    img[3, 3] = np.nan
    with pytest.raises(DIPError, match="task 'random' measures PSNR against the image itself"):
        restore(img, task="random", **TINY)


def test_every_slice_is_checked_before_the_first_runs(monkeypatch):
    stack = np.stack([image32()] * 3).astype(np.float32)
    stack[2] = np.nan
    ran = []
    monkeypatch.setattr(src_core.api.Problem, "run", lambda *a, **k: ran.append(1))
    with pytest.raises(DIPError, match="slice 2 of 3 has no observed pixel"):
        restore(stack, task="inpaint", mask=np.ones((32, 32), bool), **TINY)
    assert ran == []


def test_the_engine_refuses_what_it_cannot_take(tiny):
    img = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    with pytest.raises(DIPError, match="engine takes \\[0, 1\\]"):
        DIPRun(img * 255, None, tiny())
    with pytest.raises(DIPError, match="True/False or 0/1"):
        DIPRun(img, np.full((32, 32), 0.5), tiny())
    with pytest.raises(DIPError, match="3 masks for 2 images"):
        DIPEnsemble(np.stack([img, img]), np.ones((3, 1, 32, 32), bool), tiny())
    with pytest.raises(DIPError, match="at least one image"):
        DIPEnsemble(np.zeros((0, 1, 32, 32), np.float32), None, tiny())
    with pytest.raises(DIPError, match="references of shape"):
        DIPEnsemble(np.stack([img, img]), None, tiny(), references=np.stack([img] * 3))


def test_a_bad_font_is_a_clear_error(tmp_path):
    (tmp_path / "font.ttf").write_text("not a font")
    with pytest.raises(DIPError, match="cannot use the font"):
        text_mask((32, 32), [("x", (0, 0), 10)], font_path=str(tmp_path / "font.ttf"))


def test_a_text_file_named_png_is_not_an_image(tmp_path):
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(DIPError, match="could not read .* as an image") as info:
        read_image(tmp_path / "fake.png")
    assert "plugin" not in str(info.value).lower()


# ---------------------------------------------------------------- mask files (item 3)

def _holes():
    truth = np.ones((40, 40), bool)
    truth[10:30, 12:20] = False
    return truth


@pytest.mark.parametrize("kind", ["L", "LA", "RGB", "RGBA-opaque", "RGBA-strokes", "L16-0-255",
                                  "L-0-1", "red-on-white", "jpeg"])
def test_mask_files_mean_what_they_show(tmp_path, kind):
    truth = _holes()
    grey = np.where(truth, 255, 0).astype(np.uint8)
    suffix = ".png"
    if kind == "L":
        data = grey
    elif kind == "LA":  # grey + an opaque alpha: the average of L and A was > 0.5 everywhere
        data = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    elif kind == "RGB":
        data = np.stack([grey] * 3, axis=-1)
    elif kind == "RGBA-opaque":
        data = np.stack([grey] * 3 + [np.full_like(grey, 255)], axis=-1)
    elif kind == "RGBA-strokes":  # black strokes painted on a transparent layer
        data = np.zeros((40, 40, 4), np.uint8)
        data[..., 3] = np.where(truth, 0, 255)
    elif kind == "L16-0-255":  # 8-bit values in a 16-bit file
        data = grey.astype(np.uint16)
    elif kind == "L-0-1":
        data = truth.astype(np.uint8)
    elif kind == "red-on-white":
        data = np.stack([np.full_like(grey, 255), grey, grey], axis=-1)
    else:
        data, suffix = grey, ".jpg"
    path = tmp_path / f"mask{suffix}"
    if suffix == ".jpg":
        import imageio.v3 as iio

        iio.imwrite(path, data, quality=40)
    else:
        write_image(path, data)
    notes = []
    mask = load_mask(path, notes=notes)
    if kind == "jpeg":  # lossy: allow the edge pixels, never the inside of a hole
        assert not mask[12:28, 14:18].any() and mask[:8].all()
    else:
        assert np.array_equal(mask, truth), kind
    if kind == "RGBA-strokes":
        assert any("composited over white" in n for n in notes)
    assert np.array_equal(load_mask(path, "black")[:8], ~mask[:8])


# ---------------------------------------------------------------- files (items 4, 5, 6)

def test_the_cli_never_writes_over_an_input(tmp_path, capsys):
    photo = write_image(tmp_path / "x_restored.png", image32())
    before = photo.read_bytes()
    assert main(["random", str(photo), "--name", "x", "-o", str(tmp_path), "--overwrite", *SMALL]) == 2
    assert "would overwrite your input" in capsys.readouterr().err
    assert photo.read_bytes() == before


def test_existing_outputs_need_overwrite(tmp_path, capsys):
    photo = write_image(tmp_path / "photo.png", image32())
    out = tmp_path / "out"
    assert main(["random", str(photo), "-o", str(out), *SMALL]) == 0
    first = (out / "photo_history.json").read_bytes()
    assert main(["random", str(photo), "-o", str(out), *SMALL]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "photo_history.json").read_bytes() == first
    assert main(["random", str(photo), "-o", str(out), "--overwrite", *SMALL]) == 0


def test_an_unwritable_output_folder_fails_before_the_run(tmp_path, capsys, monkeypatch):
    photo = write_image(tmp_path / "photo.png", image32())
    monkeypatch.setattr(src_core.api, "restore", lambda *a, **k: pytest.fail("the run started"))
    assert main(["random", str(photo), "-o", str(photo / "sub"), *SMALL]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    import imageio.v3 as iio

    path = write_image(tmp_path / "a.png", image32())
    before = path.read_bytes()

    def broken(target, data, **kwargs):
        open(target, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(iio, "imwrite", broken)
    with pytest.raises(OSError):
        write_image(path, image32() // 2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_written_files_are_readable_as_the_umask_allows_and_a_replaced_file_keeps_its_mode(tmp_path,
                                                                                          monkeypatch):
    """Atomic writes go through a temporary file, which is owner-only: the result must not be."""
    from src_core import io

    monkeypatch.setattr(io, "_UMASK", 0o022)
    path = write_image(tmp_path / "a.png", image32())
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.stat(io.write_text(tmp_path / "a.json", "{}")).st_mode & 0o777 == 0o644
    os.chmod(path, 0o640)
    write_image(path, image32() // 2)
    assert os.stat(path).st_mode & 0o777 == 0o640


def _ctrl_c_at_the_first_progress(monkeypatch):
    """The CLI's progress bar sends this process SIGINT (what Ctrl-C sends) once."""
    from src_core import cli

    original = cli.ProgressBar.__call__
    sent = []

    def interrupt_once(self, event, slice_index=0):
        original(self, event, slice_index)
        if event.kind == "progress" and not sent:
            sent.append(event.iteration)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cli.ProgressBar, "__call__", interrupt_once)


def test_ctrl_c_writes_the_partial_result_and_resume_continues_it(tmp_path, capsys, monkeypatch):
    photo = write_image(tmp_path / "photo.png", image32())
    out = tmp_path / "out"
    _ctrl_c_at_the_first_progress(monkeypatch)
    args = [a if a != "6" else "30" for a in SMALL]
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the tests run in the background
    assert main(["random", str(photo), "-o", str(out), *args]) == 130  # scripts see it did not finish
    record = json.loads((out / "photo_partial_history.json").read_text())
    assert record["stopped"] is True
    assert record["slices"][0]["timings"]["iterations"] < 30
    assert read_image(out / "photo_partial_restored.png").shape == (32, 32)
    assert not (out / "photo_restored.png").exists()
    assert signal.getsignal(signal.SIGINT) is handler_before  # put back as it was
    assert (out / "photo.checkpoints").is_dir() and "--resume" in capsys.readouterr().err
    assert main(["random", str(photo), "-o", str(out), *args]) == 2   # not silently restarted
    assert "add --resume to continue it" in capsys.readouterr().err
    assert main(["random", str(photo), "-o", str(out), "--resume", *args]) == 0
    said = capsys.readouterr().out
    assert "dip: resuming from" in said and "note: resumed from a checkpoint at iteration" in said
    record = json.loads((out / "photo_history.json").read_text())
    slice0 = record["slices"][0]
    assert record["stopped"] is False and slice0["timings"]["iterations"] == 30
    assert any(n.startswith("resumed from a checkpoint at iteration") for n in slice0["notes"])
    assert not (out / "photo.checkpoints").exists()   # removed once the outputs are written
    assert main(["random", str(photo), "-o", str(out), "--resume", "--overwrite", *args]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_finished_slices_survive_a_failure_and_a_rerun_skips_them(tmp_path, failing_part):
    stack = np.stack([image32()] * 3)
    failing_part.index = 2
    with pytest.raises(DIPError, match="slice 2 of 3 failed .*slices 0..1 finished") as info:
        restore(stack, task="random", checkpoint_dir=tmp_path / "ck", **TINY)
    assert len(info.value.partial.histories) == 2
    assert np.array_equal(info.value.partial.image[2], stack[2])
    failing_part.fail, failing_part.ran[:] = False, []
    again = restore(stack, task="random", checkpoint_dir=tmp_path / "ck", **TINY)
    assert failing_part.ran == [2]                                   # slices 0 and 1 were kept, not rerun
    np.testing.assert_array_equal(again.image[:2], info.value.partial.image[:2])
    with pytest.raises(DIPError, match="belongs to another image"):
        restore(stack, task="random", checkpoint_dir=tmp_path / "ck", **{**TINY, "seed": 5})


def test_stop_keeps_finished_slices_and_says_the_rest_were_not_run():
    stack = np.stack([image32()] * 3)
    stop = threading.Event()

    def callback(event, index):
        if index == 1:
            stop.set()

    result = restore(stack, task="random", callback=callback, stop=stop, **{**TINY, "iterations": 6})
    assert result.stopped and len(result.histories) == 2
    assert np.array_equal(result.image[2], stack[2])
    assert any("slice 2 is the input" in n for n in result.notes)


# ---------------------------------------------------------------- runs left open (item 7)

def test_a_suspended_run_does_not_make_the_process_keep_what_it_frees(small_image, monkeypatch):
    from src_core import speed

    settings = {}

    class FakeLibc:
        def mallopt(self, param, value):
            settings[param] = value
            return 1

        def malloc_trim(self, pad):
            return 1

    monkeypatch.setattr(speed, "_glibc", lambda: FakeLibc())
    run = src_core.iterate(small_image, task="random", **{**TINY, "iterations": 20})
    next(run)  # suspended at an event: a 500 MiB array made now is mmapped and freed for real
    assert settings[speed._M_MMAP_MAX] == 65536
    run.close()
    assert speed._allocator_users == 0 and settings[speed._M_TRIM_THRESHOLD] == 128 * 1024


def test_restore_closes_its_run_when_the_callback_raises(small_image):
    from src_core import speed

    def boom(event, index):
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        restore(small_image, task="random", callback=boom, **TINY)
    assert speed._allocator_users == 0


def test_close_from_another_thread_does_not_raise(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=100000, report_every=100000))
    errors = []
    started = threading.Event()

    def consume():
        try:
            started.set()
            for _ in run:
                pass
        except Exception as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    started.wait()
    import time

    time.sleep(0.2)
    run.close()  # used to raise "generator already executing"
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []


# ---------------------------------------------------------------- threads (item 12)

def test_default_threads_leave_busy_cores_alone(monkeypatch):
    from src_core import speed

    monkeypatch.setattr(speed, "_chosen_threads", None)
    monkeypatch.setattr(speed, "usable_cores", lambda: 2)
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert speed.default_threads() == 2 and speed.default_threads(reserve=1) == 1
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (2.2, 2.0, 1.0))  # another 2-thread job
    assert speed.default_threads() == 1
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert speed.default_threads() == 1
    monkeypatch.setattr(speed, "_chosen_threads", 3)  # --threads 3
    assert speed.default_threads() == 3


def test_more_threads_than_cores_are_warned_of_in_one_line_and_not_promised_as_speed(capsys, monkeypatch):
    import torch

    from src_core import speed

    monkeypatch.setattr(speed, "usable_cores", lambda: 2)
    monkeypatch.setattr(speed, "_chosen_threads", None)
    before = torch.get_num_threads()
    try:
        assert main(["presets", "--threads", "3"]) == 0
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    assert "dip: warning: 3 threads asked for on 2 usable core(s)" in err
    assert "UserWarning" not in err and ".py:" not in err  # one line, no source path
    cfg = make_config("random", "cpu")
    from src_core import timing

    many, two = (timing.modelled_step(cfg.network, 1, (64, 64), torch.device("cpu"), n) for n in (99, 2))
    assert many == two


def test_the_cli_prints_the_runs_notes(tmp_path, capsys):
    """Why the answer is what it is must reach the terminal, not only the history file."""
    photo = write_image(tmp_path / "photo.png", image32())
    args = [a for a in SMALL if a != "--quiet"]
    assert main(["random", str(photo), "--fraction", "0.99", "--validate", "0.1", "-o", str(tmp_path / "o"),
                 *args]) == 0
    out = capsys.readouterr().out
    assert "note: too few observed pixels to hold 10% out for validation; validation is off" in out


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(DIPError, match="threads must be a whole number"):
        restore(image32(), task="random", threads=bad, **TINY)


def test_a_run_sets_its_threads_and_puts_them_back(tiny, small_image):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = DIPRun(small_image[None], None, tiny(iterations=4, report_every=2), threads=1)
        next(run)
        assert torch.get_num_threads() == 1
        fin = run.run()
        assert fin.history.fast_path["threads"] == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
