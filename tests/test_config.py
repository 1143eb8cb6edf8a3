import pytest

from src_core import DIPError, RunConfig, preset, preset_names


def test_paper_presets_hold_the_paper_settings():
    t1 = preset("table1")
    assert (t1.lr, t1.iterations, t1.sigma_p, t1.network.upsample) == (0.001, 11000, 0.03, "bilinear")
    assert (t1.network.down_channels, t1.network.skip_channels) == (128, 4)
    text = preset("text")
    assert (text.lr, text.iterations, text.network.skip_channels, text.network.upsample) == (0.01, 6001, 128, "nearest")
    vase = preset("vase")
    assert vase.input_kind == "meshgrid" and vase.network.input_channels == 2 and vase.network.skip_channels == 0
    lib = preset("library")
    assert lib.network.scales == 6 and lib.network.down_kernel == 5 and not lib.network.conv_after_join
    assert lib.sigma_p == 0 and lib.network.input_channels == 1
    den = preset("denoise")
    assert den.ema == 0.99 and abs(den.sigma_p - 1 / 30) < 1e-12
    assert "cpu" in preset_names()


def test_overrides_flat_and_dotted():
    cfg = preset("table1", iterations=10, scales=3, **{"network.up_channels": 16})
    assert cfg.iterations == 10 and cfg.network.scales == 3 and cfg.network.up_channels == 16
    assert preset("table1").iterations == 11000  # the preset itself is untouched


def test_json_round_trip_is_exact():
    cfg = preset("library", seed=7, early_stop=True)
    again = RunConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.network.down_channels == [16, 32, 64, 128, 128, 128]


@pytest.mark.parametrize("overrides,words", [
    (dict(lr=-0.1), "lr must be a positive"),
    (dict(iterations=0), "iterations"),
    (dict(optimizer="sgd"), "optimizer"),
    (dict(input_kind="meshgrid"), "meshgrid input has 2 channels"),
    (dict(ema=1.0), "ema"),
    (dict(ema_warmup="yes"), "ema_warmup must be true or false"),
    (dict(sigma_p=-1), "sigma_p"),
    (dict(scales=0), "scales"),
])
def test_bad_settings_are_refused_with_a_reason(overrides, words):
    with pytest.raises(DIPError, match=words):
        preset("cpu", **overrides)


def test_unknown_names_are_refused():
    with pytest.raises(DIPError, match="unknown preset"):
        preset("nope")
    with pytest.raises(DIPError, match="unknown setting 'depth'"):
        preset("cpu", depth=3)
    with pytest.raises(DIPError, match="unknown configuration fields"):
        RunConfig.from_dict({"learning_rate": 1})


def test_a_new_depth_cuts_or_extends_per_scale_lists():
    net = preset("library").network                  # per-scale channel lists, 6 scales
    shallower, deeper = net.with_scales(4), net.with_scales(7)
    assert shallower.down_channels == [16, 32, 64, 128] and shallower.scales == 4
    assert deeper.down_channels == [16, 32, 64, 128, 128, 128, 128]
    assert deeper.validate().scales == 7 and net.scales == 6       # the original is untouched
    assert preset("cpu").network.with_scales(2).down_channels == 32  # a single value stays one


def test_input_kind_brings_its_channel_count():
    assert preset("text").with_input_kind("meshgrid").validate().network.input_channels == 2
    back = preset("vase").with_input_kind("uniform")                 # vase: a meshgrid preset
    assert back.validate().network.input_channels == 32 and back.input_kind == "uniform"
    assert preset("library").with_input_kind("gaussian").network.input_channels == 1


def test_every_task_has_its_words():
    import src_core

    assert src_core.TASKS == tuple(src_core.TASK_HELP) == ("inpaint", "random", "denoise", "sr", "deconvolve")
    assert all(src_core.TASK_HELP.values())


def test_each_task_names_a_preset_that_exists_and_fits_it():
    from src_core.tasks import TASKS_BY_NAME

    for task in TASKS_BY_NAME.values():
        name = task.paper_preset({})
        assert name in src_core_presets()
        assert task.default_preset("cpu", {})[0] == "cpu"
    assert TASKS_BY_NAME["sr"].default_preset("cuda", {"factor": 8}) == ("sr8", {})


def src_core_presets():
    import src_core

    return src_core.preset_names()


def test_presets_follow_the_notebooks_guard():
    # the restoration and denoising notebooks have the backtracking guard; inpainting and SR do not
    assert {n: preset(n).guard for n in ("table1", "denoise", "text", "vase", "library", "sr4", "sr8")} == {
        "table1": True, "denoise": True, "text": False, "vase": False, "library": False,
        "sr4": False, "sr8": False}


def test_the_fills_average_their_outputs_on_a_cpu_only():
    """The fills' CPU default answers the warmed-up running average (docs/results/time_to_quality);
    the paper presets keep theirs, and the user's own setting wins."""
    from src_core.preparation import make_config

    for task in ("inpaint", "random"):
        cpu = make_config(task, device="cpu")
        assert cpu.preset == "cpu" and cpu.ema == 0.95 and cpu.ema_warmup
    paper = make_config("inpaint", "text")
    assert paper.ema == 0 and not paper.ema_warmup
    assert make_config("inpaint", device="cpu", ema=0).ema == 0
    assert make_config("denoise", device="cpu").ema_warmup is False
