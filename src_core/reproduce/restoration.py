"""Super-resolution and denoising as in the original notebooks, each in one command.

    dip reproduce sr --preset quick -o docs/results/sr
    dip reproduce denoise --preset quick -o docs/results/denoise

Super-resolution (the SR notebook): the ground truth is ``zebra_GT.png``
centre-cropped to a multiple of 32, the low-resolution input is Pillow's
Lanczos resize of it by 1/factor, DIP fits through the Lanczos downsampler
(task ``sr``), and the baseline is Pillow's bicubic upsampling of the same
low-resolution image.  Denoising (the denoising notebook): ``F16_GT.png``
plus Gaussian noise of sigma 25/255, clipped to [0, 1] (seeded here); DIP
answers with the EMA of its outputs; non-local means and TV are the
classical baselines.  Each denoising unit runs DIP a second time with
ES-WMV early stopping (``early_stop=True``, nothing held out), whose stop
needs no ground truth (the paper stops at a fixed count).  PSNR: whole
image, data_range 1, clipped float output.

Each (image, factor or noise seed) is a unit: finished units are kept in the
results folder and skipped when the command runs again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..reports import config_block, environment_bullets, fmt, md_table
from . import common as C
from .figures import plot_curve_grid, plot_image_rows

#: what the paper and its supplement report, as docs/paper.md §5 quotes it
PAPER_DENOISE = ("the paper: 29.22 dB for the last output, 30.43 dB for the exponential average of "
                 "outputs, 31.00 dB with two runs averaged (docs/paper.md §5)")

_SMALL_NET = dict(down_channels=32, up_channels=32, report_every=25)
_TINY_NET = dict(scales=2, down_channels=8, up_channels=8, skip_channels=2, report_every=2,
                 compute_ssim=False)

SPECS = {
    "sr": {
        "paper": dict(prepare={"mode": "crop32"}, units=[4, 8], config={}),
        "quick": dict(prepare={"mode": "crop", "size": 192}, units=[4, 8], config=_SMALL_NET),
        "tiny": dict(prepare={"mode": "crop", "size": 32}, units=[4], config=dict(_TINY_NET, iterations=4)),
    },
    "denoise": {
        "paper": dict(prepare={"mode": "full"}, units=[0], config={}),
        "quick": dict(prepare={"mode": "crop", "size": 128}, units=[0, 1], config=_SMALL_NET),
        "tiny": dict(prepare={"mode": "crop", "size": 32}, units=[0], config=dict(_TINY_NET, iterations=4)),
    },
}
SIGMA = 25 / 255
#: the second denoising run's change: stop by ES-WMV (Wang et al. 2021), no reference needed
EARLY_STOP = {"early_stop": True}


def _super_resolution_unit(reference: np.ndarray, unit: int) -> tuple[np.ndarray, dict]:
    """Pillow's Lanczos reduction, and Pillow's upsampling of it back as the baselines."""
    h, w = reference.shape[1:]
    low = _pil_resize(reference, (h // unit, w // unit), "LANCZOS")
    return low, {"bicubic": _pil_resize(low, (h, w), "BICUBIC"), "nearest": _pil_resize(low, (h, w), "NEAREST")}


def _denoising_unit(reference: np.ndarray, unit: int) -> tuple[np.ndarray, dict]:
    """Gaussian noise seeded by the unit, clipped; non-local means and TV as the baselines."""
    from ..classical import nlm_denoise, tv_denoise

    rng = np.random.default_rng(unit)
    noisy = np.clip(reference + rng.normal(0, SIGMA, reference.shape), 0, 1).astype(np.float32)
    return noisy, {"nlm": nlm_denoise(noisy), "tv": tv_denoise(noisy)}


@dataclass(frozen=True)
class _Command:
    """What one of the two commands does that the other does not; a unit is a factor (sr) or a
    noise seed (denoise)."""

    name: str
    image: tuple                          # (folder, file) of the shipped image
    what: str
    panels: str
    baselines: tuple
    protocol: dict
    paper: str
    engine_preset: Callable[[int], str]
    unit_id: Callable[[object], str]      # the unit's file name in the results folder
    unit_title: Callable[[object], str]
    task: Callable[[int], dict]           # restore()'s task and options
    input_title: Callable[[object, dict], str]
    observe: Callable[[np.ndarray, int], tuple]  # (observation, baselines), before any DIP run
    second_run: dict | None = None        # a second DIP run per unit, with these config changes
    scores_input: bool = False            # the observation has a PSNR of its own (same size)


COMMANDS = {c.name: c for c in (
    _Command("sr", ("dip", "zebra_GT.png"), "Super-resolution (zebra)", "input | classical | DIP | original",
             ("bicubic", "nearest"),
             dict(downsample="Pillow LANCZOS", baseline="Pillow BICUBIC", operator="lanczos2"),
             "The paper reports SR on Set5/Set14 and shows zebra as a figure; docs/paper.md gives no zebra "
             "number, so the comparison here is the notebook's own: bicubic upsampling of the same "
             "low-resolution image.",
             engine_preset=lambda unit: "sr8" if unit >= 8 else "sr4", unit_id=lambda unit: f"sr_x{unit}",
             unit_title=lambda unit: f"x{unit}", task=lambda unit: {"task": "sr", "factor": int(unit)},
             input_title=lambda unit, psnr: f"Input, x{unit} smaller", observe=_super_resolution_unit),
    _Command("denoise", ("dip", "F16_GT.png"), "Denoising (F16, sigma 25)",
             "input | classical | DIP | DIP, ES-WMV stop | original", ("nlm", "tv"),
             dict(sigma=SIGMA, noise="numpy default_rng(seed), clipped"),
             PAPER_DENOISE + ". Sizes differ: compare with care.",
             engine_preset=lambda unit: "denoise", unit_id=lambda unit: f"denoise_noise_seed{unit}",
             unit_title=lambda unit: f"noise seed {unit}", task=lambda unit: {"task": "denoise"},
             input_title=lambda unit, psnr: f"Noisy ({psnr['input']:.2f} dB)", observe=_denoising_unit,
             second_run=EARLY_STOP, scores_input=True),
)}


def restoration_settings(command: str, preset: str = "quick", overrides: dict | None = None) -> dict:
    from ..config import preset as engine_preset

    C.check_preset(preset)
    kind, spec = COMMANDS[command], SPECS[command][preset]
    configs = {}
    for unit in spec["units"]:
        cfg = engine_preset(kind.engine_preset(unit), **spec["config"]).replace(**(overrides or {}))
        config = cfg.validate().to_dict()
        config.pop("device")
        configs[str(unit)] = config
    return {"command": command, "preset": preset, "overrides": dict(overrides or {}),
            "image": "/".join(kind.image), "prepare": spec["prepare"], "configs": configs,
            "protocol": kind.protocol,
            "psnr": "whole image, data_range 1, output clipped to [0, 1], float output (not 8-bit)",
            **({"second_run": kind.second_run} if kind.second_run else {})}


def _prepare(chw: np.ndarray, prep: dict) -> np.ndarray:
    if prep["mode"] == "crop32":  # the SR notebook's enforse_div32='CROP'
        h, w = chw.shape[1:]
        h, w = h - h % 32, w - w % 32
        top, left = (chw.shape[1] - h) // 2, (chw.shape[2] - w) // 2
        return np.ascontiguousarray(chw[:, top:top + h, left:left + w])
    return C.prepare_image(chw, prep)


def _describe_prep(prep: dict, full: str = "full size") -> str:
    return full if prep["mode"] == "crop32" else C.describe_prep(prep)


def _pil_resize(chw: np.ndarray, size_hw: tuple, method: str) -> np.ndarray:
    """Pillow's resize of an 8-bit RGB/grey image, as the original notebooks do."""
    from PIL import Image

    u8 = C.to_8bit(chw)
    img = Image.fromarray(u8[0] if len(u8) == 1 else np.moveaxis(u8, 0, -1))
    out = np.asarray(img.resize(size_hw[::-1], getattr(Image, method)), dtype=np.float32) / 255.0
    return out[None] if out.ndim == 2 else np.ascontiguousarray(np.moveaxis(out, -1, 0))


def run_restoration(command: str, output_dir, preset: str = "quick", overrides: dict | None = None,
                    device: str = "auto", compile_mode: str = "auto", data_dir=None, quiet: bool = False,
                    command_line: str | None = None) -> dict:
    """Run (or resume) ``dip reproduce sr`` or ``dip reproduce denoise`` into ``output_dir``."""
    from ..config import RunConfig
    from ..devices import resolve_device

    kind = COMMANDS[command]
    overrides = dict(overrides or {})
    run = C.run_options(overrides, device, compile_mode)
    settings = restoration_settings(command, preset, overrides)
    details = (f"{_describe_prep(settings['prepare'])}, "
               f"{next(iter(settings['configs'].values()))['network']['down_channels']}-channel network")
    label, is_paper = C.setting_label(preset, overrides, details)
    command_line = command_line or C.python_command("run_restoration", command=command, output_dir=str(output_dir),
                                                    preset=preset, **C.recorded(run, overrides))
    resolve_device(run["device"])
    folder_name, file_name = kind.image
    path = C.resolve_image(file_name, data_dir, folder_name)
    image = {"reference": _prepare(C.load_unit_image(path), settings["prepare"]), "path": path,
             "sha256": C.file_sha256(path)}
    units = {str(u): RunConfig.from_dict(settings["configs"][str(u)]).replace(**run).validate()
             for u in SPECS[command][preset]["units"]}

    env = C.environment()
    folder = C.ResultsFolder(output_dir, command, settings).open(env)
    pending = [u for u in units if not folder.has(kind.unit_id(u))]
    runs = 2 if kind.second_run else 1
    progress = C.Progress(runs * sum(c.iterations for c in units.values()),
                          runs * sum(units[u].iterations for u in units if u not in pending),
                          f"{command} ({preset})", quiet)
    progress.write(f"{command}: {len(units) - len(pending)} of {len(units)} units already done in {output_dir}; "
                   f"{label}")
    try:
        for unit in pending:
            progress.start(kind.unit_id(unit))
            folder.save(kind.unit_id(unit), *_run_unit(kind, unit, units[unit], image, progress, command_line, env))
    finally:
        progress.close()
    records = {u: folder.load(kind.unit_id(u)) for u in units}
    arrays = {u: folder.load_arrays(kind.unit_id(u)) for u in units}
    return _write_outputs(kind, folder, image["reference"], records, arrays, settings, label, is_paper, command_line)


def _run_unit(kind: _Command, unit: str, config, image: dict, progress, command_line: str,
              env: dict) -> tuple[dict, dict]:
    """One unit: the observation and its baselines (before any DIP run), DIP, and the second DIP
    run if the command has one; the unit's record and 8-bit copies of every answer."""
    reference = image["reference"]
    t0 = time.perf_counter()
    observation, baselines = kind.observe(reference, int(unit))
    baseline_s = time.perf_counter() - t0
    options = kind.task(int(unit))
    outcome = C.run_dip(observation, None, reference, config, progress, **options)
    progress.finish(config.iterations)
    history = outcome.history
    best, best_it = C.oracle(history)
    history.pop("loss")
    psnr = {"input": C.psnr(observation, reference) if kind.scores_input else None,
            **{k: C.psnr(v, reference) for k, v in baselines.items()},
            "dip_final": C.psnr(outcome.output, reference), "dip_best_oracle": best}
    record = {"unit": kind.unit_id(unit), "image_file": C.display_path(image["path"]),
              "image_sha256": image["sha256"], "shape": list(reference.shape),
              "observation_shape": list(observation.shape),
              "psnr": psnr, "ssim": {"dip_final": C.ssim(outcome.output, reference)},
              "best_iteration_oracle": best_it,
              "timings": {"dip_s": outcome.wall_s, "baselines_s": baseline_s,
                          "dip_s_per_iteration": history["timings"].get("s_per_iteration")},
              "device": outcome.device, "config": dict(config.to_dict(), device=outcome.device),
              "history": history, "command": command_line, "environment": C.run_env(env)}
    answers = {"dip": outcome.output, "observation": observation, **baselines}
    if kind.second_run:
        answers["dip_early_stop"] = _second_run(kind, observation, reference, config, progress, options, record)
    return record, {k: C.to_8bit(v) for k, v in answers.items()}


def _second_run(kind: _Command, observation, reference, config, progress, options: dict, record: dict):
    """The same fit with the command's second-run changes (ES-WMV stopping), added to ``record``;
    returns its answer."""
    stopped = C.run_dip(observation, None, reference, config.replace(**kind.second_run).validate(), progress,
                        **options)
    progress.finish(config.iterations)
    record["psnr"]["dip_early_stop"] = C.psnr(stopped.output, reference)
    record["ssim"]["dip_early_stop"] = C.ssim(stopped.output, reference)
    record["early_stop"] = stopped.history.get("early_stop")  # None: it ran to the end
    record["timings"]["dip_early_stop_s"] = stopped.wall_s
    return stopped.output


def _early_stop_cell(record: dict) -> str:
    """'29.10 (it 900, stopped at 1900)', or '(ran to the end)' when ES-WMV never fired."""
    stop = record.get("early_stop")
    where = (f"it {stop['best_iteration']}, stopped at {stop['iteration']}" if stop
             else "ran to the end")
    return f"{fmt(record['psnr']['dip_early_stop'])} ({where})"


def _write_outputs(kind, folder, reference, records, arrays, settings, label, is_paper, command_line) -> dict:
    root, command = folder.root, kind.name
    names, stops, noisy = list(kind.baselines), bool(kind.second_run), kind.scores_input
    rows, titles, panels, table = [], [], {}, []
    for unit, rec in records.items():
        r, a = rec["psnr"], arrays[unit]
        u8 = lambda k: a[k].astype(np.float32) / 255.0  # noqa: E731
        stopped = [(u8("dip_early_stop"), f"DIP, ES-WMV stop ({r['dip_early_stop']:.2f} dB)")] if stops else []
        rows.append([(u8("observation"), kind.input_title(unit, r)),
                     (u8(names[0]), f"{names[0]} ({r[names[0]]:.2f} dB)"),
                     (u8("dip"), f"Deep image prior, ours ({r['dip_final']:.2f} dB)"), *stopped,
                     (reference, "Original")])
        titles.append(kind.unit_title(unit))
        panels[titles[-1]] = {"curves": {"DIP": C.psnr_curve(rec["history"])},
                              "levels": [(r[n], n) for n in names]}
        table.append([titles[-1], "x".join(map(str, rec["observation_shape"][:0:-1])),
                      *([fmt(r["input"])] if noisy else []), *[fmt(r[n]) for n in names],
                      f"**{fmt(r['dip_final'])}**", *([_early_stop_cell(rec)] if stops else []),
                      f"{fmt(r['dip_best_oracle'])} (it {rec['best_iteration_oracle']})",
                      f"{rec['timings']['dip_s']:.0f}"])
    plot_image_rows(rows, root / f"{command}.png", f"{kind.what}: {kind.panels}", label,
                    row_titles=titles)
    plot_curve_grid(panels, root / f"{command}_curves.png", f"{kind.what}: DIP PSNR over iterations", label,
                    columns=len(panels))
    headers = ["Unit", "Input size", *(["Noisy input"] if noisy else []), *names, "**Ours: DIP, final**",
               *(["Ours: DIP, ES-WMV stop (no ground truth)"] if stops else []),
               "ORACLE: DIP best iteration (ground truth)", "DIP time (s)"]
    devices = sorted({rec["device"] for rec in records.values()})
    md = [f"# {kind.what}: reproduction (PSNR, dB, against the original)", "",
          C.not_paper_banner(label, is_paper) + f"Setting: **{label}**", "", f"![{command}]({command}.png)", "",
          md_table(headers, table), "",
          f"- {kind.paper}",
          *(["- ES-WMV stop: the same run with `early_stop=True` and nothing held out: it stops "
             "once the running variance of the last `es_window` outputs has not fallen for "
             "`es_patience` iterations, and answers the running average (EMA) at the least variance; "
             "the cell gives that iteration and the stop."] if stops else []),
          "- ORACLE: the best PSNR over the iterations, chosen with the ground truth; for reference only.",
          "- PSNR: " + settings["psnr"] + ".", "",
          "## Run", "", f"- Command: `{command_line}`", f"- Setting: {label}",
          f"- Image: `{next(iter(records.values()))['image_file']}`, "
          f"{_describe_prep(settings['prepare'], 'centre-cropped to a multiple of 32 (as the SR notebook)')}",
          f"- Protocol: {settings['protocol']}",
          *environment_bullets(folder.created_env, devices, records.values()),
          f"- Results folder fingerprint: `{folder.fingerprint}`", "", "## Configuration of the DIP runs", ""]
    for unit in records:
        md += [f"{titles[list(records).index(unit)]}:", "", config_block(settings["configs"][unit]), ""]
    summary = {"command": command_line, "setting": label, "paper_setting": is_paper, "fingerprint": folder.fingerprint,
               "settings": settings, "devices": devices,
               "units": {u: {"psnr": rec["psnr"], "ssim": rec["ssim"], "timings": rec["timings"],
                             "best_iteration_oracle": rec["best_iteration_oracle"],
                             **({"early_stop": rec.get("early_stop")} if stops else {})}
                         for u, rec in records.items()}}
    return C.report_result(folder, command, md, summary)
