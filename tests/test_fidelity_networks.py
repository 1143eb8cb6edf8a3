"""The data terms and the generators behind the engine's interfaces (tiny, seconds)."""

import json

import numpy as np
import pytest
import torch

import src_core
from src_core import DIPError, DIPRun, RunConfig
from src_core.fidelity import MSE, Poisson
from src_core.network import DecoderConfig, NetworkConfig, build_network, count_parameters


def _counts(photons=20.0, size=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    clean = np.exp(-((yy - size / 2) ** 2 + (xx - size / 3) ** 2) / (2 * (size / 6) ** 2)) * photons + 1
    return rng.poisson(clean).astype(np.uint16), clean.astype(np.float32)


def test_poisson_deviance_is_zero_at_the_counts_and_grows_away_from_them():
    fid = Poisson(photons_per_unit=50.0, photons_at_zero=2.0)
    target = torch.rand(1, 1, 8, 8)
    observed = torch.ones_like(target)
    assert float(fid.loss(target, target, observed)) == pytest.approx(0.0, abs=1e-6)
    worse = [float(fid.loss((target + d).clamp(0, 1), target, observed)) for d in (0.02, 0.1, 0.3)]
    assert worse == sorted(worse) and worse[0] > 0
    # unobserved pixels do not count
    assert float(fid.loss(target * 0, target, observed * 0)) == 0.0


def test_mse_fidelity_is_the_paper_loss():
    pred, target = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)
    mask = (torch.rand(2, 1, 6, 6) > 0.5).float()
    expected = ((pred - target * mask) * mask).square().mean(dim=(1, 2, 3))
    assert torch.equal(MSE().loss(pred, target * mask, mask), expected)


def test_poisson_needs_a_positive_photon_scale():
    with pytest.raises(DIPError, match="photons_per_unit must be positive"):
        Poisson(photons_per_unit=0)
    with pytest.raises(DIPError, match="photon_gain"):
        RunConfig(fidelity="poisson", photon_gain=-1.0).validate()
    with pytest.raises(DIPError, match="fidelity must be one of"):
        RunConfig(fidelity="gauss").validate()


def test_poisson_restore_reads_the_photon_scale_from_the_counts(tiny):
    counts, clean = _counts()
    result = src_core.restore(counts, task="denoise", reference=clean, config=tiny(iterations=30),
                              fidelity="poisson", photon_gain=1.0, classical=None, validate=0)
    note = next(n for n in result.history.notes if n.startswith("fidelity: poisson"))
    lo, hi = int(counts.min()), int(counts.max())
    assert f"'photons_per_unit': {float(hi - lo)}" in note and f"'photons_at_zero': {float(lo)}" in note
    assert result.history.config["fidelity"] == "poisson"
    assert all(np.isfinite(result.history.loss)) and result.history.loss[-1] < result.history.loss[0]


def test_the_engine_refuses_a_poisson_config_without_its_scale(tiny):
    img = np.random.default_rng(0).random((1, 16, 16), dtype=np.float32)
    with pytest.raises(DIPError, match="photon scale"):
        DIPRun(img, None, tiny(iterations=2, fidelity="poisson"))


def test_mse_configs_save_as_before():
    data = RunConfig().to_dict()
    assert not {"fidelity", "photon_gain", "photon_offset"} & set(data)
    assert "architecture" not in data["network"]
    poisson = RunConfig(fidelity="poisson", photon_gain=2.5)
    assert RunConfig.from_json(poisson.to_json()) == poisson


def test_the_deep_decoder_has_fewer_weights_than_pixels_and_a_low_resolution_code():
    cfg = DecoderConfig()
    assert count_parameters(build_network(cfg, output_channels=3)) < 512 * 512
    assert cfg.input_shape(512, 512) == (64, 16, 16)
    net = build_network(DecoderConfig(scales=3, channels=8, input_channels=8), output_channels=2)
    out = net(torch.rand(1, 8, 4, 5))
    assert out.shape == (1, 2, 32, 40) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not any(m.kernel_size != (1, 1) for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_architecture_switches_the_generator_and_round_trips(tiny):
    cfg = tiny(iterations=20).replace(architecture="decoder", scales=3, channels=16, input_channels=16)
    assert isinstance(cfg.network, DecoderConfig) and cfg.network.channels == 16
    saved = json.loads(cfg.to_json())
    assert saved["network"]["architecture"] == "decoder"
    assert RunConfig.from_dict(saved) == cfg
    with pytest.raises(DIPError, match="skip_channels"):  # a skip-net field on the decoder
        cfg.replace(skip_channels=4)
    with pytest.raises(DIPError, match="architecture must be one of"):
        cfg.replace(architecture="unet")
    img = np.random.default_rng(0).random((1, 30, 27), dtype=np.float32)  # padded to a multiple of 8
    fin = DIPRun(img, None, cfg).run()
    assert fin.output.shape == (1, 30, 27) and fin.history.loss[-1] < fin.history.loss[0]


def test_both_generators_answer_the_engines_questions():
    for cfg in (NetworkConfig(scales=3), DecoderConfig(scales=3)):
        assert cfg.multiple() == 8 and cfg.min_size() >= 8 and cfg.context() == 16
        assert cfg.with_scales(2).multiple() == 4 and cfg.with_width(12).width() == 12
        assert "at most 2 scales" in cfg.size_problem(5, 100) or "scales=" in cfg.size_problem(5, 100)
        cost = src_core.speed.network_cost(cfg, 1, (32, 32))
        assert cost["output_elements"] == 32 * 32 and cost["parameters"] > 0


def test_a_task_names_its_presets_and_a_preset_names_no_task():
    from src_core.tasks import TASKS_BY_NAME, preset_task

    for task in TASKS_BY_NAME.values():
        for name in task.presets:
            assert name in src_core.PRESETS and preset_task(name) == task.name
    assert preset_task("cpu") is None
    assert isinstance(src_core.PRESETS["table1"], src_core.Preset)
