"""Figure 7 of the paper: text inpainting (Kate) and Barbara with 50% of pixels missing.

Each panel shows the corrupted input, a classical baseline, our DIP result
and the original, with the PSNR of each, laid out like the paper's rows
(corrupted | competing method | DIP).  The paper's competitors (Shepard
networks; Papyan et al.) are not re-implemented: the classical baselines
computed here on the same masks stand in their place, and the paper's
printed numbers are quoted in the Markdown next to the figure.
"""

from __future__ import annotations

import numpy as np

from ..errors import DIPError
from ..reports import config_block, environment_bullets, fmt, md_table
from . import common as C
from .figures import plot_curve_grid, plot_image_rows
from .table1 import TV_PARAMS, classical_baselines

COMMAND = "figure7"
PANELS = ("kate", "barbara")

PRESETS = {
    "paper": {
        "kate": dict(engine_preset="text", prepare={"mode": "full"}, config={}),
        "barbara": dict(engine_preset="table1", prepare={"mode": "full"}, config={}),
    },
    "quick": {
        "kate": dict(engine_preset="text", prepare={"mode": "downscale", "factor": 2},
                     config=dict(down_channels=32, up_channels=32, skip_channels=32, iterations=2000,
                                 report_every=25)),
        "barbara": dict(engine_preset="table1", prepare={"mode": "crop", "size": 256},
                        config=dict(down_channels=32, up_channels=32, lr=0.01, iterations=2000,
                                    report_every=25)),
    },
    "tiny": {
        "kate": dict(engine_preset="text", prepare={"mode": "downscale", "factor": 16},
                     config=dict(scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=4,
                                 report_every=2, compute_ssim=False)),
        "barbara": dict(engine_preset="table1", prepare={"mode": "crop", "size": 32},
                        config=dict(scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=4,
                                    report_every=2, compute_ssim=False)),
    },
}

SOURCES = {
    "kate": dict(image=("dip", "kate.png"), mask=("dip", "kate_mask.png"),
                 title="Text inpainting (Kate, the paper's text mask)"),
    "barbara": dict(image=("table1", "barbara.png"), missing_fraction=0.5, mask_seed=0,
                    title="Barbara, 50% of pixels missing (Bernoulli mask, seed 0)"),
}

#: each panel's file name in the results folder
UNIT_IDS = {"kate": "kate_text", "barbara": "barbara_50"}

PAPER_NUMBERS = {
    "kate": "competitor in the paper: Shepard networks; its numbers are not quoted in docs/paper.md (compare visually)",
    "barbara": "the paper's Table 1: DIP 32.22 dB, Papyan et al. 28.14 dB (full-size image)",
}


def figure7_settings(preset: str = "quick", overrides: dict | None = None) -> dict:
    from ..config import preset as engine_preset

    C.check_preset(preset)
    overrides = dict(overrides or {})
    panels = {}
    for name in PANELS:
        spec = PRESETS[preset][name]
        cfg = engine_preset(spec["engine_preset"], **spec["config"]).replace(**overrides).validate()
        config = cfg.to_dict()
        config.pop("device")
        src = SOURCES[name]
        panels[name] = {"image": "/".join(src["image"]), "mask": "/".join(src["mask"]) if "mask" in src else None,
                        "missing_fraction": src.get("missing_fraction"), "mask_seed": src.get("mask_seed"),
                        "prepare": spec["prepare"], "config": config}
    return {"command": COMMAND, "preset": preset, "overrides": overrides, "panels": panels,
            "baselines": {"biharmonic": "skimage.restoration.inpaint_biharmonic",
                          "tv": dict(TV_PARAMS, method="Chambolle-Pock, observed pixels kept exactly")},
            "psnr": "whole image, data_range 1, output clipped to [0, 1], float output (not 8-bit)"}


def _details(settings: dict) -> str:
    parts = []
    for name, p in settings["panels"].items():
        net = p["config"]["network"]
        parts.append(f"{name}: {C.describe_prep(p['prepare'])}, {net['down_channels']}-channel network, "
                     f"lr {p['config']['lr']}, {p['config']['iterations']} iterations")
    return "; ".join(parts) + "; the paper: 512x512 images, 128 channels, 6001 (Kate) / 11000 (Barbara) iterations"


def run_figure7(output_dir, preset: str = "quick", overrides: dict | None = None, device: str = "auto",
                compile_mode: str = "auto", data_dir=None, quiet: bool = False, command: str | None = None) -> dict:
    """Run (or resume) Figure 7 into ``output_dir``; returns the summary.

    ``data_dir``: a folder with ``kate.png``, ``kate_mask.png`` and
    ``barbara.png`` instead of the shipped images.
    """
    from ..devices import resolve_device

    overrides = dict(overrides or {})
    run = C.run_options(overrides, device, compile_mode)
    settings = figure7_settings(preset, overrides)
    label, is_paper = C.setting_label(preset, overrides, _details(settings))
    command = command or C.python_command("run_figure7", output_dir=str(output_dir), preset=preset,
                                          **C.recorded(run, overrides), data_dir=data_dir and str(data_dir))
    resolve_device(run["device"])
    problems = {name: _load_panel(name, settings["panels"][name], data_dir, run) for name in PANELS}

    env = C.environment()
    folder = C.ResultsFolder(output_dir, COMMAND, settings).open(env)
    pending = _pending(folder, problems)
    total = sum(problems[n]["config"].iterations for n in PANELS)
    done = sum(problems[n]["config"].iterations for n in PANELS if n not in pending)
    progress = C.Progress(total, done, f"figure7 ({preset})", quiet)
    progress.write(f"figure7: {len(PANELS) - len(pending)} of {len(PANELS)} panels already done in "
                   f"{output_dir}; {label}")
    try:
        for name in pending:
            progress.start(name)
            folder.save(UNIT_IDS[name], *_run_panel(name, problems[name], progress, command, env))
            progress.finish(problems[name]["config"].iterations)
    finally:
        progress.close()

    records = {n: folder.load(UNIT_IDS[n]) for n in PANELS}
    arrays = {n: folder.load_arrays(UNIT_IDS[n]) for n in PANELS}
    return _write_outputs(folder, problems, records, arrays, settings, label, is_paper, command)


def _load_panel(name: str, spec: dict, data_dir, run: dict) -> dict:
    """A panel's image, mask and configuration, read, prepared and checked before any work starts."""
    from ..config import RunConfig
    from ..masks import bernoulli_mask

    src = SOURCES[name]
    path = C.resolve_image(src["image"][1], data_dir, src["image"][0])
    original = C.load_unit_image(path)
    reference = C.prepare_image(original, spec["prepare"])
    if "mask" in src:
        mask_path = C.resolve_image(src["mask"][1], data_dir, src["mask"][0])
        mask = C.prepare_mask(C.load_matching_mask(mask_path, path, original), spec["prepare"])
        mask_sha = C.file_sha256(mask_path)
    else:
        mask = bernoulli_mask(reference.shape[1:], spec["missing_fraction"], spec["mask_seed"])
        mask_path, mask_sha = None, None
    config = RunConfig.from_dict(spec["config"]).replace(**run).validate()
    problem = config.network.size_problem(*reference.shape[1:])
    if problem:
        raise DIPError(f"image {path} after preparation: {problem}")
    return dict(path=path, sha256=C.file_sha256(path), mask_path=mask_path, mask_sha256=mask_sha,
                reference=reference, mask=mask, config=config, original_shape=list(original.shape))


def _pending(folder, problems: dict) -> list:
    """The panels still to run; a finished one made from another image file is refused."""
    pending = []
    for name in PANELS:
        if not folder.has(UNIT_IDS[name]):
            pending.append(name)
        elif folder.load(UNIT_IDS[name]).get("image_sha256") != problems[name]["sha256"]:
            raise DIPError(f"{folder.unit_path(UNIT_IDS[name])} was computed from another {name} image; "
                           "refusing to mix them.")
    return pending


def _run_panel(name: str, p: dict, progress, command: str, env: dict) -> tuple[dict, dict]:
    """The baselines and the DIP run of one panel: its record, and 8-bit copies for the figure."""
    ref, mask = p["reference"], p["mask"]
    bih, tv, baseline_timings = classical_baselines(ref, mask)
    outcome = C.run_dip(ref, mask, ref, p["config"], progress)
    history = outcome.history
    best, best_it = C.oracle(history)
    events = C.destabilisation_events(history.pop("loss"))
    record = {
        "panel": name, "image_file": C.display_path(p["path"]), "image_sha256": p["sha256"],
        "mask_file": p["mask_path"] and C.display_path(p["mask_path"]), "mask_sha256": p["mask_sha256"],
        "original_shape": p["original_shape"], "shape": list(ref.shape),
        "observed_fraction": float(mask.mean()),
        "psnr": {"corrupted": C.psnr(ref * mask, ref), "biharmonic": C.psnr(bih, ref),
                 "tv": C.psnr(tv, ref), "dip_final": C.psnr(outcome.output, ref),
                 "dip_best_oracle": best,
                 "dip_kept": C.psnr(C.observed_kept(outcome.output, ref, mask), ref),
                 "holes_biharmonic": C.psnr_holes(bih, ref, mask),
                 "holes_tv": C.psnr_holes(tv, ref, mask),
                 "holes_dip": C.psnr_holes(outcome.output, ref, mask)},
        "best_iteration_oracle": best_it, "destabilisation_events": events,
        "guard_recoveries": len(history["recoveries"]),
        "timings": {"dip_s": outcome.wall_s, "dip_s_per_iteration": history["timings"].get("s_per_iteration"),
                    **baseline_timings},
        "device": outcome.device, "config": dict(p["config"].to_dict(), device=outcome.device),
        "history": history, "command": command, "environment": C.run_env(env),
    }
    arrays = {k: C.to_8bit(v) for k, v in (("dip", outcome.output), ("biharmonic", bih), ("tv", tv))}
    arrays["mask"] = np.packbits(mask)
    return record, arrays


# ----------------------------------------------------------------------------- outputs

def _write_outputs(folder, problems, records, arrays, settings, label, is_paper, command) -> dict:
    _plot_figures(folder.root, problems, records, arrays, label)
    md = _markdown_tables(records, settings, label, is_paper) + _run_section(records, settings, label, folder, command)
    summary = {"figure": "Figure 7", "setting": label, "paper_setting": is_paper, "not_the_paper_setting": not is_paper,
               "command": command, "fingerprint": folder.fingerprint, "settings": settings,
               "environment_at_folder_creation": folder.created_env, "environment_of_each_run": "units/<unit>.json",
               "devices": _devices(records),
               "panels": {n: {"psnr": records[n]["psnr"], "best_iteration_oracle": records[n]["best_iteration_oracle"],
                              "observed_fraction": records[n]["observed_fraction"], "shape": records[n]["shape"],
                              "timings": records[n]["timings"], "paper": PAPER_NUMBERS[n]} for n in PANELS}}
    return C.report_result(folder, "figure7", md, summary)


def _devices(records: dict) -> list:
    return sorted({records[n]["device"] for n in PANELS})


def _plot_figures(root, problems, records, arrays, label) -> None:
    """``figure7.png`` (the paper's rows), one figure per panel with TV too, and the PSNR curves."""
    rows = []
    for name in PANELS:
        ref = problems[name]["reference"]
        mask = problems[name]["mask"]
        a = arrays[name]
        r = records[name]["psnr"]
        size = "x".join(str(v) for v in ref.shape[:0:-1])
        corrupted = np.where(mask, ref, 0.0) if mask.ndim == 2 else ref * mask
        row = [(corrupted, f"Corrupted ({r['corrupted']:.2f} dB)"),
               (a["biharmonic"].astype(np.float32) / 255.0, f"Biharmonic, classical ({r['biharmonic']:.2f} dB)"),
               (a["dip"].astype(np.float32) / 255.0, f"Deep image prior, ours ({r['dip_final']:.2f} dB)"),
               (ref, "Original")]
        rows.append(row)
        single = row[:2] + [(a["tv"].astype(np.float32) / 255.0, f"TV, classical ({r['tv']:.2f} dB)")] + row[2:]
        plot_image_rows([single], root / f"figure7_{name}.png", f"{SOURCES[name]['title']}, {size}", label)
    row_titles = [SOURCES[n]["title"].split(" (")[0].split(",")[0] for n in PANELS]
    plot_image_rows(rows, root / "figure7.png",
                    "Figure 7 reproduction: text inpainting (top) and 50% missing pixels (bottom)", label,
                    row_titles=row_titles)
    panels = {name: {"curves": {"DIP": C.psnr_curve(records[name]["history"])},
                     "levels": [(records[name]["psnr"]["biharmonic"], "biharmonic"),
                                (records[name]["psnr"]["tv"], "TV")]} for name in PANELS}
    plot_curve_grid(panels, root / "figure7_curves.png", "Figure 7 panels: DIP PSNR over iterations", label,
                    columns=2)


def _markdown_tables(records, settings, label, is_paper) -> list[str]:
    """The figure, the PSNR table, the PSNR over the holes, and what the columns mean."""
    headers = ["Panel", "Size", "Observed pixels", "Corrupted", "Biharmonic", "TV",
               "**Ours: DIP, final iteration**", "Ours, observed pixels kept",
               "ORACLE: DIP best iteration (ground truth)", "DIP time (s)", "The paper"]
    table = []
    for name in PANELS:
        rec = records[name]
        r = rec["psnr"]
        table.append([name, "x".join(str(v) for v in rec["shape"][:0:-1]), f"{rec['observed_fraction']:.1%}",
                      fmt(r["corrupted"]), fmt(r["biharmonic"]), fmt(r["tv"]), f"**{fmt(r['dip_final'])}**",
                      fmt(r.get("dip_kept")),
                      f"{fmt(r['dip_best_oracle'])} (it {rec['best_iteration_oracle']})",
                      f"{rec['timings']['dip_s']:.0f}", PAPER_NUMBERS[name]])
    return ["# Figure 7 reproduction: inpainting comparisons (PSNR, dB)", "",
            C.not_paper_banner(label, is_paper) + f"Setting: **{label}**", "",
            "![Figure 7](figure7.png)", "",
            md_table(headers, table), "",
            "PSNR over the missing pixels only (how well the holes are filled):", "",
            md_table(["Panel", "Biharmonic", "TV", "Ours: DIP"],
                     [[n, fmt(records[n]["psnr"].get("holes_biharmonic")), fmt(records[n]["psnr"].get("holes_tv")),
                       fmt(records[n]["psnr"].get("holes_dip"))] for n in PANELS]), "",
            "- *Ours, observed pixels kept*: the DIP output with the observed pixels pasted back (needs no ground "
            "truth). DIP re-synthesises every pixel, observed ones included, while the classical methods keep "
            f"them exactly; with {records['kate']['observed_fraction']:.0%} of Kate's pixels observed, the fit of the "
            "observed pixels dominates the whole-image PSNR.",
            "- Layout as in the paper: corrupted input | competing method | deep image prior, plus the original. "
            "The paper's competitors (Shepard networks for the text, Papyan et al. for Barbara) are not "
            "re-implemented; biharmonic and TV inpainting, computed here on the same masks, take their place "
            "(`figure7_<panel>.png` shows both).",
            "- ORACLE: the best PSNR over the DIP iterations, chosen with the ground truth; not a result a user "
            "could get, shown for reference only.",
            "- PSNR: " + settings["psnr"] + ".", ""]


def _run_section(records, settings, label, folder, command) -> list[str]:
    """How the panels were made: command, images and masks, environment, times, configurations."""
    md = ["## Run", "",
          f"- Command: `{command}`",
          f"- Setting: {label}",
          *[f"- {n}: {C.describe_prep(settings['panels'][n]['prepare'])} of `{records[n]['image_file']}`"
            + (f" with mask `{records[n]['mask_file']}`" if records[n].get("mask_file") else
               f", Bernoulli mask {settings['panels'][n]['missing_fraction']:.0%} missing, seed "
               f"{settings['panels'][n]['mask_seed']}") for n in PANELS],
          *environment_bullets(folder.created_env, _devices(records), records.values()),
          *[f"- Time, {n}: DIP {records[n]['timings']['dip_s']:.1f} s "
            f"({records[n]['timings']['dip_s_per_iteration']:.4f} s/iteration); biharmonic "
            f"{records[n]['timings']['biharmonic_s']:.2f} s; TV {records[n]['timings']['tv_s']:.2f} s; "
            f"guard recoveries {records[n]['guard_recoveries']}" for n in PANELS],
          f"- Results folder fingerprint: `{folder.fingerprint}`", "",
          "## Configuration of the DIP runs", ""]
    for name in PANELS:
        md += [f"{name}:", "", config_block(settings["panels"][name]["config"]), ""]
    return md + ["Files: `figure7.png` (both rows), `figure7_kate.png` and `figure7_barbara.png` (with TV), "
                 "`figure7_curves.png`, `figure7.json`, `units/`.", ""]
