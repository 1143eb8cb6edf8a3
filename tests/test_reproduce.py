"""The reproduction commands at the 'tiny' preset: structure, resume, refusals, baselines.

Everything runs on 32x32 images with a 2-scale, 8-channel network and a few
iterations; no PSNR here is compared with the paper.
"""

import csv
import json

import numpy as np
import pytest

from src_core import DIPError
from src_core.cli import main
from src_core.io import write_image
from src_core.reproduce import (biharmonic, common, destabilisation_events, run_experiments, run_figure7,
                                run_restoration, run_table1, table1_settings, total_variation, tv_inpaint)

NOT_PAPER = "NOT the paper's setting"


@pytest.fixture
def dip_calls(monkeypatch):
    """Counts every DIP optimisation the commands start."""
    calls = []
    real = common.run_dip

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(common, "run_dip", counting)
    return calls


def no_work(*args, **kwargs):
    raise AssertionError("a finished unit was computed again")


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- Table 1

def test_table1_outputs_resume_and_refusals(tmp_path, dip_calls, monkeypatch):
    out = tmp_path / "t1"
    result = run_table1(out, preset="tiny", images=["house", "cameraman"], seeds=[0, 1], device="cpu", quiet=True)
    assert len(dip_calls) == 4
    for name in ("table1.md", "table1.csv", "table1_per_seed.csv", "table1.json", "fingerprint.json",
                 "table1_curves.png", "curves/house.png", "curves/cameraman.png", "units/house_seed1.json",
                 "units/house_seed1.npz"):
        assert (out / name).is_file(), name

    md = (out / "table1.md").read_text()
    for words in ("ORACLE", NOT_PAPER, "Papyan et al. (paper)", "DIP (paper)", "Biharmonic (same masks)",
                  "Ours, observed pixels kept",
                  "TV (same masks)", "**mean**", "Command: `python: src_core.reproduce.run_table1(",
                  "Mask seeds: 0, 1", "Device: cpu", "torch ", "Commit of the runs", "Time per image", '"lr": 0.001'):
        assert words in md, words
    assert "Ours − paper DIP" not in md  # only the paper preset compares with the paper directly

    rows = read_csv(out / "table1.csv")
    assert [r["image"] for r in rows] == ["house", "cameraman", "mean"]
    assert {"papyan_paper", "dip_paper", "dip_final_mean", "dip_final_std", "biharmonic_mean", "tv_mean",
            "oracle_dip_best_mean", "n_seeds", "setting"} <= set(rows[0])
    assert float(rows[0]["dip_paper"]) == 39.16 and float(rows[0]["papyan_paper"]) == 34.58
    assert all(NOT_PAPER in r["setting"] for r in rows)
    seeds = read_csv(out / "table1_per_seed.csv")
    assert {"psnr_dip_final", "psnr_dip_observed_kept", "holes_psnr_dip", "holes_psnr_biharmonic",
            "oracle_psnr_dip_best", "oracle_best_iteration"} <= set(seeds[0])
    assert [(r["image"], r["mask_seed"]) for r in seeds] == [("house", "0"), ("house", "1"),
                                                             ("cameraman", "0"), ("cameraman", "1")]

    summary = json.loads((out / "table1.json").read_text())
    assert summary == json.loads(json.dumps(result["summary"]))
    assert summary["not_the_paper_setting"] and not summary["paper_setting"]
    assert summary["seeds"] == [0, 1] and summary["settings"]["missing_fraction"] == 0.5
    assert "oracle" in summary["columns"]["dip_best_oracle"].lower()
    house = summary["images"]["house"]
    assert house["dip_final"]["n"] == 2 and set(house["per_seed"]) == {"0", "1"}
    assert house["paper_dip"] == 39.16 and house["biharmonic"]["mean"] > house["corrupted"]["mean"]
    unit = json.loads((out / "units" / "house_seed1.json").read_text())
    assert unit["mask_seed"] == 1 and unit["network_seed"] == unit["config"]["seed"] == 1
    assert len(unit["image_sha256"]) == 64 and unit["fingerprint"] == summary["fingerprint"]
    assert unit["history"]["iterations"][-1] == 6 and len(unit["history"]["psnr"]) == 3

    # a second run does no work at all
    monkeypatch.setattr("src_core.reproduce.table1.tv_inpaint", no_work)
    monkeypatch.setattr("src_core.reproduce.table1.biharmonic", no_work)
    before = (out / "units" / "house_seed0.json").stat().st_mtime_ns
    run_table1(out, preset="tiny", images=["house", "cameraman"], seeds=[0, 1], device="cpu", quiet=True)
    assert len(dip_calls) == 4
    assert (out / "units" / "house_seed0.json").stat().st_mtime_ns == before
    monkeypatch.undo()

    # an interrupted run (a unit missing) and a new seed: only those are computed
    counter = _Counter(common.run_dip)
    monkeypatch.setattr(common, "run_dip", counter)
    (out / "units" / "cameraman_seed1.json").unlink()
    run_table1(out, preset="tiny", images=["house", "cameraman"], seeds=[0, 1, 2], device="cpu", quiet=True)
    assert counter.count == 3  # cameraman seed 1, house seed 2, cameraman seed 2
    assert "Mask seeds: 0, 1, 2" in (out / "table1.md").read_text()

    # another configuration in the same folder is refused, naming what differs
    with pytest.raises(DIPError, match=r"different configuration .*lr: 0\.001 -> 0\.05"):
        run_table1(out, preset="tiny", images=["house"], seeds=[0], overrides={"lr": 0.05}, device="cpu",
                   quiet=True)
    with pytest.raises(DIPError, match="holds results of 'dip reproduce table1'"):
        run_figure7(out, preset="tiny", device="cpu", quiet=True)


def test_table1_seeds_batched_give_the_records_of_separate_runs(tmp_path, dip_calls):
    """A GPU fits an image's seeds as one batch; each seed's record must be its single run's."""
    kwargs = dict(preset="tiny", images=["house"], seeds=[0, 1, 2], device="cpu", quiet=True)
    run_table1(tmp_path / "one_by_one", batch_seeds=False, **kwargs)
    assert len(dip_calls) == 3
    run_table1(tmp_path / "batched", batch_seeds=True, **kwargs)
    assert len(dip_calls) == 3  # the batch does not go through the single-run path
    for seed in (0, 1, 2):
        single = json.loads((tmp_path / "one_by_one" / "units" / f"house_seed{seed}.json").read_text())
        batched = json.loads((tmp_path / "batched" / "units" / f"house_seed{seed}.json").read_text())
        assert batched["batched_with_seeds"] == [0, 1, 2] and single["batched_with_seeds"] is None
        assert batched["config"]["seed"] == seed and batched["mask_seed"] == seed
        for key in ("dip_final", "dip_kept", "biharmonic"):
            assert batched["psnr"][key] == pytest.approx(single["psnr"][key], abs=1e-3), (seed, key)
        assert batched["history"]["iterations"] == single["history"]["iterations"]
    assert "dip_final" in json.loads((tmp_path / "batched" / "table1.json").read_text())["images"]["house"]


class _Counter:
    def __init__(self, function):
        self.function = function
        self.count = 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.function(*args, **kwargs)


def test_table1_cli_and_bad_inputs(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["reproduce", "table1", "--preset", "tiny", "--images", "montage", "--seeds", "3", "-o", str(out),
            "--device", "cpu", "--iterations", "4"]
    assert main(args) == 0
    md = (out / "table1.md").read_text()
    assert f"Command: `dip reproduce table1 --preset tiny -o {out} --images montage --seeds 3 --iterations 4" in md
    assert "iterations=4" in md and NOT_PAPER in md
    assert json.loads((out / "table1.json").read_text())["settings"]["config"]["iterations"] == 4
    capsys.readouterr()

    # same folder, other settings: one clear line, exit code 2
    assert main(args[:-1] + ["5"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "iterations: 4 -> 5" in err and "Traceback" not in err

    # a folder that is not a results folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["reproduce", "figure7", "--preset", "tiny", "-o", str(other), "--quiet"]) == 2
    assert "not a 'dip reproduce' results folder" in capsys.readouterr().err

    # a missing and an unreadable image are named
    data = tmp_path / "data"
    data.mkdir()
    assert main(["reproduce", "table1", "--preset", "tiny", "--images", "house", "-o", str(tmp_path / "x"),
                 "--data-dir", str(data), "--quiet"]) == 2
    assert f"image file not found: {data / 'house.png'}" in capsys.readouterr().err
    (data / "house.png").write_bytes(b"not a png")
    with pytest.raises(DIPError, match=r"could not read .*house\.png as an image"):
        run_table1(tmp_path / "y", preset="tiny", images=["house"], data_dir=data, quiet=True)
    with pytest.raises(DIPError, match="no shipped image 'table1/nosuch.png'"):
        run_table1(tmp_path / "z", preset="tiny", images=["nosuch"], quiet=True)
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()  # checked before any work


def test_table1_baselines_first_then_dip(tmp_path, dip_calls, monkeypatch, capsys):
    out = tmp_path / "b"
    args = ["reproduce", "table1", "--preset", "tiny", "--images", "peppers", "man", "-o", str(out), "--quiet"]
    assert main(args + ["--baselines-only"]) == 0
    assert dip_calls == []
    md = (out / "table1.md").read_text()
    assert "DIP: 0 of 2 image/seed runs done" in md and "**not run**" in md and "--baselines-only" in md
    rows = read_csv(out / "table1.csv")
    assert rows[0]["dip_final_mean"] == "" and float(rows[0]["biharmonic_mean"]) > 15
    assert not (out / "table1_curves.png").exists()

    monkeypatch.setattr("src_core.reproduce.table1.tv_inpaint", no_work)
    monkeypatch.setattr("src_core.reproduce.table1.biharmonic", no_work)
    # --compile chooses kernels like --device: the same folder (fingerprint) takes it, each unit records it
    assert main(args + ["--device", "cpu", "--compile", "off"]) == 0
    assert len(dip_calls) == 2
    md = (out / "table1.md").read_text()
    assert "not run" not in md and "runs done" not in md and "--device cpu --compile off" in md
    unit = json.loads((out / "units" / "man_seed0.json").read_text())
    assert unit["config"]["compile"] == "off" and unit["history"]["fast_path"]["compile"] is False
    assert {"biharmonic", "tv", "dip_final"} <= set(unit["psnr"]) and unit["dip_done"]
    with np.load(out / "units" / "man_seed0.npz") as arrays:
        assert {"dip", "mask"} <= set(arrays.files)
    assert (out / "table1_curves.png").is_file()


def test_table1_own_images_and_presets(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    write_image(data / "mine.png", (rng.random((40, 40)) * 255).astype(np.uint8))
    result = run_table1(tmp_path / "own", preset="tiny", images=["mine"], data_dir=data, device="cpu", quiet=True)
    row = result["summary"]["images"]["mine"]
    assert row["paper_dip"] is None and row["size"] == "32x32"
    assert "| mine | 32x32 | n/a | n/a |" in (tmp_path / "own" / "table1.md").read_text()

    paper = table1_settings("paper")
    assert paper["config"]["lr"] == 0.001 and paper["config"]["iterations"] == 11000
    assert paper["config"]["network"]["down_channels"] == 128 and paper["prepare"] == {"mode": "full"}
    label, is_paper = common.setting_label("paper", {}, "")
    assert is_paper and NOT_PAPER not in label
    label, is_paper = common.setting_label("paper", {"iterations": 10}, "")
    assert not is_paper and NOT_PAPER in label
    assert NOT_PAPER in common.setting_label("quick", {}, "128 px")[0]
    with pytest.raises(DIPError, match="unknown reproduction preset"):
        table1_settings("fast")
    with pytest.raises(DIPError, match="unknown setting 'depth'"):
        table1_settings("tiny", {"depth": 3})


# ----------------------------------------------------------------------------- Figure 7

def test_figure7_outputs_and_resume(tmp_path, dip_calls):
    out = tmp_path / "f7"
    result = run_figure7(out, preset="tiny", device="cpu", quiet=True)
    assert len(dip_calls) == 2
    for name in ("figure7.png", "figure7_kate.png", "figure7_barbara.png", "figure7_curves.png", "figure7.md",
                 "figure7.json", "units/kate_text.json", "units/kate_text.npz", "units/barbara_50.json"):
        assert (out / name).is_file(), name
    md = (out / "figure7.md").read_text()
    for words in (NOT_PAPER, "ORACLE", "Biharmonic", "**Ours: DIP, final iteration**", "32.22",
                  "Ours, observed pixels kept", "missing pixels only",
                  "Command: `python: src_core.reproduce.run_figure7(", "kate_mask.png"):
        assert words in md, words
    panels = result["summary"]["panels"]
    assert set(panels) == {"kate", "barbara"}
    for p in panels.values():
        assert {"corrupted", "biharmonic", "tv", "dip_final", "dip_best_oracle"} <= set(p["psnr"])
    assert 0.4 < panels["barbara"]["observed_fraction"] < 0.6 and panels["kate"]["observed_fraction"] > 0.5
    assert run_figure7(out, preset="tiny", device="cpu", quiet=True)["summary"]["panels"] == panels
    assert len(dip_calls) == 2


# ----------------------------------------------------------------------------- SR and denoising

@pytest.mark.parametrize("command, baselines, unit", [("sr", {"bicubic", "nearest"}, "sr_x4"),
                                                      ("denoise", {"nlm", "tv", "input"}, "denoise_noise_seed0")])
def test_sr_and_denoise_outputs_resume_and_refusals(tmp_path, dip_calls, command, baselines, unit):
    out = tmp_path / command
    result = run_restoration(command, out, preset="tiny", device="cpu", quiet=True)
    runs = 1 if command == "sr" else 2  # denoising runs again with ES-WMV early stopping
    assert len(dip_calls) == runs
    if command == "sr":  # the network fitted the 4x smaller image, the answer is full size
        assert dip_calls[0] == (3, 8, 8)
    for name in (f"{command}.png", f"{command}_curves.png", f"{command}.md", f"{command}.json",
                 f"units/{unit}.json", f"units/{unit}.npz"):
        assert (out / name).is_file(), name
    md = (out / f"{command}.md").read_text()
    for words in (NOT_PAPER, "ORACLE", "**Ours: DIP, final**", "Command: `python: src_core.reproduce"):
        assert words in md, words
    psnr = next(iter(result["summary"]["units"].values()))["psnr"]
    assert baselines <= {k for k, v in psnr.items() if v is not None}
    if command == "sr":
        assert psnr["bicubic"] > psnr["nearest"]  # the baseline itself is sane
    else:
        assert psnr["nlm"] > psnr["input"] + 3
        assert psnr["dip_early_stop"] is not None and "ES-WMV stop (no ground truth)" in md
        assert "(ran to the end)" in md  # 4 iterations never fill the 100-output window
    again = run_restoration(command, out, preset="tiny", device="cpu", quiet=True)
    assert again["summary"]["units"] == result["summary"]["units"] and len(dip_calls) == runs
    with pytest.raises(DIPError, match="different configuration"):
        run_restoration(command, out, preset="tiny", overrides={"iterations": 3}, device="cpu", quiet=True)
    other = "denoise" if command == "sr" else "sr"
    with pytest.raises(DIPError, match=f"'dip reproduce {command}'"):
        run_restoration(other, out, preset="tiny", device="cpu", quiet=True)


# ----------------------------------------------------------------------------- experiments

def test_experiments_outputs_resume_and_subsets(tmp_path, dip_calls, capsys):
    out = tmp_path / "ex"
    base = ["reproduce", "experiments", "--preset", "tiny", "-o", str(out), "--device", "cpu", "--quiet"]
    assert main(base + ["--only", "depth", "guard"]) == 0
    # depth 1 with and without skips, depth 5 too deep for 32 px; guard lr 0.1 on/off
    assert len(dip_calls) == 4
    md = (out / "experiments.md").read_text()
    for words in ("## Depth", "## Destabilisation", NOT_PAPER, "ORACLE", "not run: 5 scales need",
                  "destabilisations", "guard recoveries", "Command: `dip reproduce experiments --preset tiny",
                  "## Every destabilisation in these runs"):
        assert words in md, words
    assert "## Width" not in md
    for name in ("depth.png", "guard_curves.png", "guard_fit.png", "experiments.csv", "experiments.json"):
        assert (out / name).is_file(), name
    rows = read_csv(out / "experiments.csv")
    assert {r["experiment"] for r in rows} == {"depth", "guard"}
    assert any(r["not_run_reason"] for r in rows) and all(NOT_PAPER in r["setting_label"] for r in rows)
    unit = json.loads((out / "units" / "kate_d2_w8_s8_adam_lr0.1_it4_noguard.json").read_text())
    assert len(unit["history"]["loss"]) == 4 and unit["config"]["guard"] is False

    # the rest; the runs shared with finished ones (lr 0.1 with the guard on) are not redone
    assert main(base + ["--only", "width", "lr", "optimizer", "long"]) == 0
    # new: width 4 and 8 (= the base run, also lr 0.01 and Adam), L-BFGS, 3 long runs
    assert len(dip_calls) == 4 + 2 + 1 + 3
    summary = json.loads((out / "experiments.json").read_text())
    assert set(summary["experiments"]) == {"width", "lr", "optimizer", "long"}
    assert summary["experiments"]["long"]["ES-WMV (guard on)"]["unit"].endswith("_eswmv")
    assert summary["experiments"]["lr"]["0.01"]["unit"] == summary["experiments"]["width"]["8"]["unit"]
    for name in ("width.png", "width_curves.png", "lr_curves.png", "optimizer_curves.png", "long_curves.png"):
        assert (out / name).is_file(), name

    assert main(base) == 0  # everything, nothing left to compute
    assert len(dip_calls) == 10
    assert main(base + ["--set", "sigma_p=0.05"]) == 2
    assert "different configuration" in capsys.readouterr().err
    with pytest.raises(DIPError, match="unknown experiment"):
        run_experiments(tmp_path / "e2", preset="tiny", only=["colour"])


# ----------------------------------------------------------------------------- pieces

def test_tv_inpainting_keeps_observed_pixels_and_minimises_tv():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:40, 0:40] / 39.0
    img = np.stack([0.5 + 0.4 * np.sin(4 * x) * (y > 0.5), 0.3 + 0.5 * x, 0.6 * y]).astype(np.float32)
    mask = rng.random((40, 40)) > 0.5
    info = {}
    tv = tv_inpaint(img, mask, info=info)
    bih = biharmonic(img, mask)
    assert tv.shape == bih.shape == img.shape and tv.dtype == np.float32
    assert np.allclose(tv[:, mask], img[:, mask], atol=1e-6) and np.allclose(bih[:, mask], img[:, mask], atol=1e-6)
    # the TV solution has no more total variation than another image with the same observed pixels
    assert total_variation(tv) <= total_variation(bih) + 1e-3 * total_variation(bih)
    assert info["iterations"] > 0 and info["tv"] == pytest.approx(total_variation(tv), rel=1e-5)
    assert common.psnr(tv, img) > common.psnr(img * mask, img) + 10
    with pytest.raises(DIPError, match="no observed pixel"):
        tv_inpaint(img, np.zeros((40, 40), bool))


def test_destabilisation_events_and_helpers():
    loss = [1e-3] * 400
    loss[100:110] = [1e-1] * 10   # a 20 dB spike
    loss[300] = 4e-3              # 6 dB
    loss[350] = 2e-3              # 3 dB: not an event
    events = destabilisation_events(loss)
    assert [e["iteration"] for e in events] == [101, 301]
    assert events[0]["drop_db"] == pytest.approx(20.0)
    assert destabilisation_events([]) == []
    loss[200:203] = [1e-1] * 3    # two onsets 4 iterations apart: one fall
    loss[206:210] = [1e-1] * 4
    assert [e["iteration"] for e in destabilisation_events(loss)] == [101, 201, 301]
    h = {"iterations": [10, 20, 30], "psnr": [20.0, 25.0, 24.0]}
    assert common.oracle(h) == (25.0, 20) and common.history_at(h, 25) == 25.0
    assert common.mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)), 2)
    assert common.fmt_ms(None, None) == "n/a" and common.fmt_ms(2.0, None) == "2.00"
    mask = np.ones((8, 8), bool)
    mask[0, 0] = False
    assert common.prepare_mask(mask, {"mode": "downscale", "factor": 4}).tolist() == [[False, True], [True, True]]
    assert common.clean_json({"a": float("nan"), "b": np.float32(1.23456789)}) == {"a": None, "b": 1.234568}
