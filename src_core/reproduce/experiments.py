"""The experiments of the two reproduction reports (../shared/seeds/), as one command.

* ``width``: channels per layer 4, 16, 32, 64, 128 at depth 5 (n_d = n_u = n_s), Kate text inpainting;
* ``depth``: 1 to 8 scales with and without skip connections, Kate;
* ``lr``: Adam at 0.1, 0.01 and 0.001 with PSNR curves, Kate;
* ``optimizer``: Adam against L-BFGS (the original's variant: 100 Adam steps, then L-BFGS), Kate;
* ``long``: twice the iterations of the Table 1 setting on a Table 1 image, with and without the
  guard, plus ES-WMV early stopping: does PSNR fall late (the overfitting question)?
* ``guard``: destabilisation events at two learning rates with and without the guard, Kate.

Every distinct DIP run is one *unit*; experiments share units where their
settings coincide (the width-32 run of the quick preset is also its depth-5
run, its lr-0.01 run and its Adam run), so nothing is computed twice.
"""

from __future__ import annotations

import numpy as np

from ..errors import DIPError
from ..reports import clean_json, config_block, environment_bullets, fmt, md_table, write_csv
from . import common as C
from .figures import plot_curves, plot_xy
from .table1 import PRESETS as T1_PRESETS

COMMAND = "experiments"
EXPERIMENTS = ("width", "depth", "lr", "optimizer", "long", "guard")

PRESETS = {
    "paper": dict(
        problems={"kate": {"mode": "full"}, "table1": {"mode": "full"}},
        base={"kate": ("text", {}), "table1": ("table1", {})},
        sweeps=dict(width=[4, 16, 32, 64, 128], depth=list(range(1, 9)), depth_width=128,
                    lr=[0.1, 0.01, 0.001], optimizer_lr=0.01, long_factor=2, guard_lr=[0.1, 0.01],
                    es_window=100, es_patience=1000),
    ),
    "quick": dict(
        problems={"kate": {"mode": "downscale", "factor": 4}, "table1": {"mode": "crop", "size": 128}},
        base={"kate": ("text", dict(down_channels=32, up_channels=32, skip_channels=32, iterations=1000,
                                    report_every=10)),
              "table1": ("table1", dict(T1_PRESETS["quick"]["config"]))},  # the Table 1 quick runs
        sweeps=dict(width=[4, 16, 32, 64, 128], depth=list(range(1, 9)), depth_width=32,
                    lr=[0.1, 0.01, 0.001], optimizer_lr=0.01, long_factor=2, guard_lr=[0.1, 0.01],
                    es_window=100, es_patience=1000),
    ),
    "tiny": dict(
        problems={"kate": {"mode": "downscale", "factor": 16}, "table1": {"mode": "crop", "size": 32}},
        base={"kate": ("text", dict(scales=2, down_channels=8, up_channels=8, skip_channels=8, iterations=4,
                                    report_every=2, compute_ssim=False, lbfgs_warmup=2)),
              "table1": ("table1", dict(scales=2, down_channels=8, up_channels=8, skip_channels=2,
                                        iterations=4, report_every=2, compute_ssim=False))},
        sweeps=dict(width=[4, 8], depth=[1, 5], depth_width=8, lr=[0.1, 0.01], optimizer_lr=0.01,
                    long_factor=2, guard_lr=[0.1], es_window=2, es_patience=2),
    ),
}

EVENT_RULE = {"drop_db": 5.0, "window": 100}


def experiments_settings(preset: str = "quick", overrides: dict | None = None) -> dict:
    from ..config import preset as engine_preset

    C.check_preset(preset)
    overrides = dict(overrides or {})
    spec = PRESETS[preset]
    base = {}
    for key, (name, changes) in spec["base"].items():
        cfg = engine_preset(name, **changes).replace(**overrides).validate().to_dict()
        cfg.pop("device")
        base[key] = cfg
    return {"command": COMMAND, "preset": preset, "overrides": overrides,
            "problems": {"kate": {"image": "dip/kate.png", "mask": "dip/kate_mask.png",
                                  "prepare": spec["problems"]["kate"]},
                         "table1": {"image": "table1/<--image>.png", "missing_fraction": 0.5, "mask_seed": 0,
                                    "prepare": spec["problems"]["table1"]}},
            "base": base, "sweeps": spec["sweeps"], "event_rule": EVENT_RULE,
            "psnr": "whole image, data_range 1, output clipped to [0, 1], float output (not 8-bit)"}


def _details(settings: dict) -> str:
    k = settings["base"]["kate"]
    t = settings["base"]["table1"]
    return (f"Kate {C.describe_prep(settings['problems']['kate']['prepare'])}, {k['network']['down_channels']}-channel "
            f"base network, {k['iterations']} iterations; depth sweep at {settings['sweeps']['depth_width']} "
            f"channels; long runs on {C.describe_prep(settings['problems']['table1']['prepare'])}, lr {t['lr']}, "
            f"{settings['sweeps']['long_factor']} x {t['iterations']} iterations; the paper: 512x512 images, "
            "128 channels, 6001 / 11000 iterations")


# ----------------------------------------------------------------------------- planning

def _uid(problem: str, cfg) -> str:
    net = cfg.network.validate()
    skips = set(net.skip_channels)
    widths = set(net.down_channels)
    parts = [problem, f"d{net.scales}", f"w{net.down_channels[0] if len(widths) == 1 else 'mixed'}",
             f"s{net.skip_channels[0] if len(skips) == 1 else 'mixed'}", cfg.optimizer, f"lr{cfg.lr:g}",
             f"it{cfg.iterations}", "guard" if cfg.guard else "noguard"]
    if cfg.early_stop:
        parts.append("eswmv")
    return "_".join(str(p) for p in parts)


def plan(settings: dict, only, table1_image: str, min_side: dict) -> tuple[dict, dict]:
    """Units to run and, per experiment, its rows: (label, uid or None, reason if not run)."""
    from ..config import RunConfig

    sw = settings["sweeps"]
    base = {k: RunConfig.from_dict(v) for k, v in settings["base"].items()}
    problem_key = {"kate": "kate", "table1": f"t1-{table1_image}"}
    units: dict[str, tuple] = {}
    rows: dict[str, list] = {}

    def add(experiment, label, problem, **changes):
        cfg = base[problem].replace(**changes).validate()
        need = cfg.network.min_size()
        if min_side[problem] < need:
            rows[experiment].append((label, None, f"not run: {cfg.network.scales} scales need an image of at "
                                                  f"least {need} px; this one is {min_side[problem]} px"))
            return
        uid = _uid(problem_key[problem], cfg)
        units.setdefault(uid, (problem, cfg))
        rows[experiment].append((label, uid, None))

    for experiment in only:
        rows[experiment] = []
        if experiment == "width":
            for w in sw["width"]:
                add("width", w, "kate", down_channels=w, up_channels=w, skip_channels=w)
        elif experiment == "depth":
            w = sw["depth_width"]
            for d in sw["depth"]:
                add("depth", (d, "skip"), "kate", scales=d, down_channels=w, up_channels=w, skip_channels=w)
                add("depth", (d, "no skip"), "kate", scales=d, down_channels=w, up_channels=w, skip_channels=0)
        elif experiment == "lr":
            for lr in sw["lr"]:
                add("lr", lr, "kate", lr=lr)
        elif experiment == "optimizer":
            for opt in ("adam", "lbfgs"):
                add("optimizer", opt, "kate", optimizer=opt, lr=sw["optimizer_lr"])
        elif experiment == "long":
            n = base["table1"].iterations * sw["long_factor"]
            add("long", "guard on", "table1", iterations=n, guard=True)
            add("long", "guard off", "table1", iterations=n, guard=False)
            add("long", "ES-WMV (guard on)", "table1", iterations=n, guard=True, early_stop=True,
                es_window=sw["es_window"], es_patience=sw["es_patience"])
        elif experiment == "guard":
            for lr in sw["guard_lr"]:
                for guard in (True, False):
                    add("guard", (lr, "on" if guard else "off"), "kate", lr=lr, guard=guard)
    return units, rows


# ----------------------------------------------------------------------------- running

def _load_problems(settings, table1_image, data_dir):
    from ..masks import bernoulli_mask

    out = {}
    p = settings["problems"]["kate"]
    path = C.resolve_image("kate.png", data_dir, "dip")
    mask_path = C.resolve_image("kate_mask.png", data_dir, "dip")
    original = C.load_unit_image(path)
    mask_full = C.load_matching_mask(mask_path, path, original)
    ref = C.prepare_image(original, p["prepare"])
    out["kate"] = dict(reference=ref, mask=C.prepare_mask(mask_full, p["prepare"]), path=path,
                       sha256=C.file_sha256(path), mask_path=mask_path, mask_sha256=C.file_sha256(mask_path))
    p = settings["problems"]["table1"]
    path = C.resolve_image(table1_image, data_dir, "table1")
    ref = C.prepare_image(C.load_unit_image(path), p["prepare"])
    out["table1"] = dict(reference=ref, mask=bernoulli_mask(ref.shape[1:], p["missing_fraction"], p["mask_seed"]),
                         path=path, sha256=C.file_sha256(path), mask_path=None, mask_sha256=None)
    return out


def run_experiments(output_dir, preset: str = "quick", only=None, table1_image: str = "barbara",
                    overrides: dict | None = None, device: str = "auto", compile_mode: str = "auto",
                    data_dir=None, quiet: bool = False,
                    command: str | None = None) -> dict:
    """Run (or resume) the reports' experiments into ``output_dir``; returns the summary.

    ``only``: a subset of ``EXPERIMENTS``; ``table1_image``: the image of the
    long runs; ``overrides`` change the base settings of every run (the
    sweeps then set their own field).
    """
    from ..devices import resolve_device

    overrides = dict(overrides or {})
    run = C.run_options(overrides, device, compile_mode)
    only = _selected(only)
    settings = experiments_settings(preset, overrides)
    label, is_paper = C.setting_label(preset, overrides, _details(settings))
    command = command or C.python_command("run_experiments", output_dir=str(output_dir), preset=preset,
                                          only=only, table1_image=table1_image, **C.recorded(run, overrides),
                                          data_dir=data_dir and str(data_dir))
    resolve_device(run["device"])
    problems = _load_problems(settings, table1_image, data_dir)
    min_side = {k: int(min(v["reference"].shape[1:])) for k, v in problems.items()}
    units, rows = plan(settings, only, table1_image, min_side)

    env = C.environment()
    folder = C.ResultsFolder(output_dir, COMMAND, settings).open(env)
    pending = _pending(folder, units, problems)
    total = sum(cfg.iterations for _, cfg in units.values())
    done = total - sum(units[u][1].iterations for u in pending)
    progress = C.Progress(total, done, f"experiments ({preset})", quiet)
    progress.write(f"experiments {', '.join(only)}: {len(units) - len(pending)} of {len(units)} runs already "
                   f"done in {output_dir}; {label}")
    try:
        for uid in pending:
            problem, cfg = units[uid]
            progress.start(uid)
            folder.save(uid, _run_unit(problem, cfg, problems[problem], run, progress, command, env))
            progress.finish(cfg.iterations)
    finally:
        progress.close()

    records = {uid: folder.load(uid) for uid in units}
    return _Report(folder, settings, only, rows, records, problems, label, is_paper, command).write()


def _selected(only) -> list:
    """The experiments asked for (default all), in the order of :data:`EXPERIMENTS`."""
    only = list(only) if only else list(EXPERIMENTS)
    unknown = [e for e in only if e not in EXPERIMENTS]
    if unknown:
        raise DIPError(f"unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}.")
    return [e for e in EXPERIMENTS if e in only]


def _pending(folder, units: dict, problems: dict) -> list:
    """The units still to run; a finished one with another configuration or image is refused."""
    pending = []
    for uid, (problem, cfg) in units.items():
        if not folder.has(uid):
            pending.append(uid)
            continue
        record = folder.load(uid)
        want = dict(cfg.to_dict(), device=None)
        have = dict(record.get("config", {}), device=None)
        if have != want:
            raise DIPError(f"{folder.unit_path(uid)} holds a run with another configuration "
                           f"({C.settings_diff(have, want)}); refusing to mix it in.")
        if record.get("image_sha256") != problems[problem]["sha256"]:
            raise DIPError(f"{folder.unit_path(uid)} was computed from another image; refusing to mix it in.")
    return pending


def _run_unit(problem: str, cfg, p: dict, run: dict, progress, command: str, env: dict) -> dict:
    """One DIP run of the plan; its record keeps the loss of every iteration (the fit's falls)."""
    outcome = C.run_dip(p["reference"], p["mask"], p["reference"], cfg.replace(**run), progress)
    history = outcome.history
    best, best_it = C.oracle(history)
    events = C.destabilisation_events(history["loss"], **EVENT_RULE)
    history["loss"] = clean_json(history["loss"], 5)
    return {
        "problem": problem, "image_file": C.display_path(p["path"]), "image_sha256": p["sha256"],
        "mask_file": p["mask_path"] and C.display_path(p["mask_path"]), "mask_sha256": p["mask_sha256"],
        "shape": list(p["reference"].shape), "observed_fraction": float(np.asarray(p["mask"]).mean()),
        "parameters": _count_params(cfg, p["reference"].shape[0]),
        "psnr_final": C.psnr(outcome.output, p["reference"]),
        "ssim_final": C.ssim(outcome.output, p["reference"]) if cfg.compute_ssim else None,
        "psnr_best_oracle": best, "best_iteration_oracle": best_it,
        "destabilisation_events": events, "guard_recoveries": history["recoveries"],
        "early_stop": history.get("early_stop"),
        "timings": {"dip_s": outcome.wall_s, "s_per_iteration": history["timings"].get("s_per_iteration"),
                    "iterations_done": history["timings"].get("iterations")},
        "device": outcome.device, "config": dict(cfg.to_dict(), device=None),
        "history": history, "command": command, "environment": C.run_env(env),
    }


def _count_params(cfg, channels: int) -> int:
    import torch

    from ..network import build_network, count_parameters

    with torch.device("meta"):  # shapes only, no memory
        return count_parameters(build_network(cfg.network, output_channels=channels))


# ----------------------------------------------------------------------------- outputs

def _final(r):
    return fmt(r["psnr_final"]) if r else "n/a"


def _best(r):
    return f"{fmt(r['psnr_best_oracle'])} (it {r['best_iteration_oracle']})" if r else "n/a"


def _fall_after_best(r) -> float | None:
    """Lowest PSNR after the best iteration, below the best (dB)."""
    h = r["history"]
    it_best = r["best_iteration_oracle"]
    after = [v for it, v in zip(h["iterations"], h["psnr"]) if it >= it_best and v is not None]
    return (r["psnr_best_oracle"] - min(after)) if after else None


def _events(r) -> list:
    return C.merge_events(r["destabilisation_events"], EVENT_RULE["window"])


def _worst_fit_fall(r) -> float:
    return max((e["drop_db"] for e in _events(r)), default=0.0)


def _fit_db(r):
    loss = np.asarray([np.nan if v is None else v for v in r["history"]["loss"]], dtype=float)
    its = np.arange(1, loss.size + 1)
    return its.tolist(), (-10 * np.log10(np.maximum(loss, 1e-30) / max(r["observed_fraction"], 1e-12))).tolist()


#: how a row's setting is named in the CSV and the JSON ("3 skip", "lr 0.1 guard on"; else str)
_SETTING_NAMES = {"depth": lambda s: f"{s[0]} {s[1]}", "guard": lambda s: f"lr {s[0]} guard {s[1]}"}


class _Report:
    """experiments.md, .csv, .json and the plots: one section per experiment that was asked for."""

    def __init__(self, folder, settings, only, rows, records, problems, label, is_paper, command):
        self.folder, self.root, self.settings, self.only, self.rows = folder, folder.root, settings, only, rows
        self.records, self.problems, self.command = records, problems, command
        self.label, self.is_paper = label, is_paper
        self.sw, self.base_k = settings["sweeps"], settings["base"]["kate"]
        kate = problems["kate"]
        self.kate_desc = (f"Kate text inpainting ({C.describe_prep(settings['problems']['kate']['prepare'])}, "
                          f"{kate['reference'].shape[2]}x{kate['reference'].shape[1]}, "
                          f"{kate['mask'].mean():.1%} of pixels observed)")

    def rec(self, uid):
        return self.records.get(uid) if uid else None

    def write(self) -> dict:
        summary = {"setting": self.label, "paper_setting": self.is_paper, "not_the_paper_setting": not self.is_paper,
                   "command": self.command, "fingerprint": self.folder.fingerprint, "settings": self.settings,
                   "environment_at_folder_creation": self.folder.created_env,
                   "environment_of_each_run": "units/<unit>.json", "experiments": {}}
        md, csv_rows = self._introduction(), []
        for experiment in self.only:
            md += getattr(self, f"_{experiment}")()
            name, rows = _SETTING_NAMES.get(experiment, str), self.rows[experiment]
            csv_rows += [self._csv_row(experiment, name(setting), uid, reason) for setting, uid, reason in rows]
            summary["experiments"][experiment] = {name(setting): _short(self.rec(uid), reason)
                                                  for setting, uid, reason in rows}
        md += self._destabilisations() + self._run_section()
        write_csv(self.root / "experiments.csv",
                  ["experiment", "setting", "unit", "not_run_reason", "psnr_final", "oracle_psnr_best",
                   "oracle_best_iteration", "destabilisations", "guard_recoveries", "parameters", "s_per_iteration",
                   "dip_seconds", "setting_label"], csv_rows)
        summary["devices"] = self._devices()
        summary["total_dip_s"] = self._total_s()
        return C.report_result(self.folder, "experiments", md, summary)

    def _csv_row(self, experiment: str, setting: str, uid, reason) -> list:
        r = self.rec(uid)
        return [experiment, setting, uid or "", reason or "",
                r and r["psnr_final"], r and r["psnr_best_oracle"], r and r["best_iteration_oracle"],
                r and len(_events(r)), r and len(r["guard_recoveries"]),
                r and r["parameters"], r and r["timings"]["s_per_iteration"], r and r["timings"]["dip_s"],
                self.label]

    def _curves(self, experiment: str, name) -> dict:
        """The PSNR curve of every run of an experiment, named by ``name(setting)``."""
        return {name(s): C.psnr_curve(self.rec(u)["history"]) for s, u, _ in self.rows[experiment] if u}

    def _devices(self) -> list:
        return sorted({r["device"] for r in self.records.values()})

    def _total_s(self) -> float:
        return sum(r["timings"]["dip_s"] for r in self.records.values())

    def _introduction(self) -> list[str]:
        return ["# Experiments of the reproduction reports", "",
                C.not_paper_banner(self.label, self.is_paper) + f"Setting: **{self.label}**", "",
                "PSNR in dB against the clean image. *final*: the last iteration (what a user gets). *ORACLE*: "
                "the best PSNR over the iterations, chosen with the ground truth: not available in practice, "
                "shown only to measure how much early stopping could add. *Destabilisations*: falls of the fit, "
                f"i.e. the fit PSNR (output against the observed pixels, from the loss of every iteration) more than "
                f"{EVENT_RULE['drop_db']:g} dB below its best of the previous {EVENT_RULE['window']} iterations; one "
                "event per fall, counted the same way with and without the guard, no ground truth needed. "
                "*Recoveries*: the guard restored the last good weights.", ""]

    # --------------------------------------------------------------------- one section per experiment

    def _width(self) -> list[str]:
        base_k, scales = self.base_k, self.base_k["network"]["scales"]
        table, xs, finals, bests = [], [], [], []
        for w, uid, reason in self.rows["width"]:
            r = self.rec(uid)
            table.append([w, r["parameters"] if r else "", _final(r) if r else reason, _best(r),
                          r and len(_events(r)), fmt(r and r["timings"]["s_per_iteration"], 4),
                          fmt(r and r["timings"]["dip_s"], 0)])
            if r:
                xs.append(w), finals.append(r["psnr_final"]), bests.append(r["psnr_best_oracle"])
        plot_xy({"final": (xs, finals), "ORACLE best iteration": (xs, bests)}, self.root / "width.png",
                f"Width sweep (depth {scales}): PSNR against channels per layer", "channels per layer", self.label,
                logx=True, xticks=xs)
        plot_curves(self._curves("width", lambda w: f"width {w}"), self.root / "width_curves.png",
                    "Width sweep: PSNR over iterations", self.label)
        return [f"## Width: channels per layer at depth {scales} (report 2, experiment 2)", "",
                f"{self.kate_desc}; n_d = n_u = n_s = width at all {scales} scales, "
                f"{base_k['network']['upsample']} "
                f"upsampling, Adam lr {base_k['lr']}, {base_k['iterations']} iterations.", "",
                md_table(["width", "parameters", "final PSNR", "ORACLE best PSNR (iteration)", "destabilisations",
                          "s/iteration", "time (s)"], table), "", "![width](width.png)", ""]

    def _depth(self) -> list[str]:
        by_depth = {}
        for (d, kind), uid, reason in self.rows["depth"]:
            by_depth.setdefault(d, {})[kind] = (uid, reason)
        table = []
        series = {"with skips (final)": ([], []), "without skips (final)": ([], []),
                  "with skips (ORACLE)": ([], []), "without skips (ORACLE)": ([], [])}
        for d, kinds in by_depth.items():
            row = [d]
            for kind in ("skip", "no skip"):
                uid, reason = kinds[kind]
                r = self.rec(uid)
                row += [r["parameters"] if r else "", _final(r) if r else reason, _best(r) if r else "",
                        len(_events(r)) if r else ""]
                if r:
                    name = "with skips" if kind == "skip" else "without skips"
                    series[f"{name} (final)"][0].append(d)
                    series[f"{name} (final)"][1].append(r["psnr_final"])
                    series[f"{name} (ORACLE)"][0].append(d)
                    series[f"{name} (ORACLE)"][1].append(r["psnr_best_oracle"])
            table.append(row)
        plot_xy(series, self.root / "depth.png", "Depth sweep: PSNR with and without skip connections",
                "depth (scales)", self.label, xticks=sorted(by_depth))
        width = self.sw["depth_width"]
        return ["## Depth: 1 to 8 scales, with and without skip connections (report 2, experiment 2)", "",
                f"{self.kate_desc}; {width} channels per layer; with skips: n_s = {width} at every "
                f"scale, without: n_s = 0; Adam lr {self.base_k['lr']}, {self.base_k['iterations']} iterations.", "",
                md_table(["depth", "params (skips)", "final (skips)", "ORACLE best (skips)", "destab. (skips)",
                          "params (no skips)", "final (no skips)", "ORACLE best (no skips)", "destab. (no skips)"],
                         table), "", "![depth](depth.png)", ""]

    def _lr(self) -> list[str]:
        table = []
        for lr, uid, reason in self.rows["lr"]:
            r = self.rec(uid)
            table.append([lr, _final(r) if r else reason, _best(r), fmt(r and _fall_after_best(r)),
                          r and len(_events(r)), r and len(r["guard_recoveries"])])
        plot_curves(self._curves("lr", lambda lr: f"Adam lr {lr}"), self.root / "lr_curves.png",
                    "Learning rate: PSNR over iterations (Adam)", self.label)
        return ["## Learning rate: Adam at 0.1, 0.01, 0.001 (report 2, experiment 3)", "",
                f"{self.kate_desc}; base network, guard {'on' if self.base_k['guard'] else 'off'}, "
                f"{self.base_k['iterations']} iterations.", "",
                md_table(["lr", "final PSNR", "ORACLE best (iteration)", "lowest PSNR after the best, below it (dB)",
                          "destabilisations", "guard recoveries"], table), "", "![lr](lr_curves.png)", ""]

    def _optimizer(self) -> list[str]:
        lr = self.sw["optimizer_lr"]
        table = []
        for opt, uid, reason in self.rows["optimizer"]:
            r = self.rec(uid)
            table.append([opt, lr, _final(r) if r else reason, _best(r),
                          fmt(r and r["timings"]["s_per_iteration"], 4), fmt(r and r["timings"]["dip_s"], 0),
                          r and len(_events(r))])
        plot_curves(self._curves("optimizer", str), self.root / "optimizer_curves.png",
                    "Adam against L-BFGS: PSNR over iterations", self.label)
        return ["## Optimiser: Adam against L-BFGS (report 2, experiment 3)", "",
                f"{self.kate_desc}; lr {lr}. L-BFGS as in the original code: the first 100 iterations "
                "are Adam steps at lr 0.001, then one L-BFGS step (history 100, no line search) per iteration.", "",
                md_table(["optimizer", "lr", "final PSNR", "ORACLE best (iteration)", "s/iteration", "time (s)",
                          "destabilisations"], table), "", "![optimizer](optimizer_curves.png)", ""]

    def _long(self) -> list[str]:
        sw, t = self.sw, self.settings["base"]["table1"]
        n = t["iterations"]
        table, curves, marks, findings = [], {}, [(n, f"{n} it (Table 1 setting)")], []
        for name, uid, reason in self.rows["long"]:
            r = self.rec(uid)
            not_run = [name, reason, "", "", "", "", "", ""]
            table.append(_long_row(name, r, n, curves, marks, findings) if r else not_run)
        plot_curves(curves, self.root / "long_curves.png",
                    f"Long runs ({sw['long_factor']}x iterations): does PSNR fall late?", self.label, vlines=marks)
        t1 = self.problems["table1"]["reference"]
        return [f"## Long runs: {sw['long_factor']}x the Table 1 iterations (report 2, experiment 1; the "
                "overfitting question)", "",
                f"`{C.display_path(self.problems['table1']['path'])}`, "
                f"{C.describe_prep(self.settings['problems']['table1']['prepare'])} ({t1.shape[2]}x{t1.shape[1]}), "
                f"50% missing (mask seed 0); Table 1 network, lr {t['lr']}, {sw['long_factor'] * n} iterations. "
                f"ES-WMV: running variance of the last {sw['es_window']} outputs, patience {sw['es_patience']} "
                "(no ground truth).", "",
                md_table(["run", "iterations", f"PSNR at {n}", f"final PSNR ({sw['long_factor'] * n}, or the "
                          "ES-WMV answer)", "ORACLE best (iteration)", "best − final (dB)", "destabilisations",
                          "guard recoveries"], table), "",
                *[f"- {f}" for f in findings], "", "![long](long_curves.png)", ""]

    def _guard(self) -> list[str]:
        base_k = self.base_k
        table, curves, fits = [], {}, {}
        for (lr, guard), uid, reason in self.rows["guard"]:
            r = self.rec(uid)
            if not r:
                table.append([lr, guard, reason, "", "", "", "", ""])
                continue
            table.append([lr, guard, _final(r), _best(r), fmt(r["psnr_best_oracle"] - r["psnr_final"]),
                          len(_events(r)), len(r["guard_recoveries"]), fmt(_worst_fit_fall(r))])
            curves[f"lr {lr}, guard {guard}"] = C.psnr_curve(r["history"])
            fits[f"lr {lr}, guard {guard}"] = _fit_db(r)
        plot_curves(curves, self.root / "guard_curves.png", "Destabilisation: PSNR with and without the guard",
                    self.label)
        plot_curves(fits, self.root / "guard_fit.png", "Destabilisation: fit PSNR of every iteration (observed pixels)",
                    self.label, ylabel="fit PSNR (dB)")
        return ["## Destabilisation with and without the guard (report 2, experiments 1 and 3)", "",
                f"{self.kate_desc}; base network, {base_k['iterations']} iterations. The guard (from the original "
                f"Barbara notebook): every {base_k['guard_every']} iterations, if the fit PSNR fell more than "
                f"{base_k['guard_drop_db']:g} dB since the last check, restore the last good weights.", "",
                md_table(["lr", "guard", "final PSNR", "ORACLE best (iteration)", "best − final (dB)",
                          "destabilisations", "guard recoveries", "deepest fall of the fit (dB)"], table), "",
                "![guard](guard_curves.png)", "", "![guard fit](guard_fit.png)", ""]

    # --------------------------------------------------------------------- every run

    def _destabilisations(self) -> list[str]:
        unstable = [(uid, r) for uid, r in self.records.items() if _events(r)]
        md = ["## Every destabilisation in these runs", ""]
        if not unstable:
            return md + [f"None: no run's fit fell by more than {EVENT_RULE['drop_db']:g} dB.", ""]
        curves, marks = {}, []
        for uid, r in unstable[:4]:
            curves[f"{uid}: fit PSNR"] = _fit_db(r)
            curves[f"{uid}: PSNR"] = C.psnr_curve(r["history"])
            marks += [(e["iteration"], "fall") for e in _events(r)]
        plot_curves(curves, self.root / "destabilisations.png",
                    "Destabilisations: fit PSNR of every iteration and PSNR", self.label, vlines=marks)
        return md + [md_table(["run", "lr", "guard", "falls of the fit: iteration (depth, dB)", "guard recoveries",
                               "final PSNR", "ORACLE best (iteration)"],
                              [[f"`{uid}`", r["config"]["lr"], "on" if r["config"]["guard"] else "off",
                                ", ".join(f"{e['iteration']} ({e['drop_db']:.1f})" for e in _events(r)),
                                len(r["guard_recoveries"]), fmt(r["psnr_final"]), _best(r)]
                               for uid, r in unstable]), "", "![destabilisations](destabilisations.png)", ""]

    def _run_section(self) -> list[str]:
        return ["## Run", "",
                f"- Command: `{self.command}`",
                f"- Setting: {self.label}",
                *environment_bullets(self.folder.created_env, self._devices(), self.records.values()),
                f"- {len(self.records)} distinct DIP runs (shared between experiments where the settings coincide); "
                f"total DIP time {self._total_s() / 60:.1f} min",
                f"- Results folder fingerprint: `{self.folder.fingerprint}`", "",
                "## Base configurations (each experiment changes only the fields it sweeps)", "",
                "Kate (text inpainting):", "", config_block(self.settings["base"]["kate"]), "",
                "Table 1 image (long runs):", "", config_block(self.settings["base"]["table1"]), "",
                "Sweeps:", "", config_block(self.sw), "",
                "Files: `experiments.csv`, `experiments.json`, the plots, `units/` (one JSON per run, with the loss "
                "of every iteration).", ""]


def _long_row(name: str, r: dict, n: int, curves: dict, marks: list, findings: list) -> list:
    """A long run's row of the table; its curve, ES-WMV mark and findings go to the section's lists."""
    h = r["history"]
    at_n = C.history_at(h, n)
    es = r.get("early_stop")
    is_es = bool(r["config"].get("early_stop"))
    if es:
        stop = f"ES-WMV stopped at {es['iteration']}, answer from {es['best_iteration']}"
        marks.append((es["best_iteration"], "ES-WMV answer"))
        findings.append(f"{name}: stopped at iteration {es['iteration']} with the output of iteration "
                        f"{es['best_iteration']}: {r['psnr_final']:.2f} dB, "
                        f"{r['psnr_best_oracle'] - r['psnr_final']:.2f} dB below the best PSNR seen up "
                        "to the stop.")
    elif is_es:
        stop = f"ran {r['timings']['iterations_done']}; ES-WMV did not trigger"
        findings.append(f"{name}: the running variance of the outputs was still falling, so ES-WMV "
                        f"(patience {r['config']['es_patience']}) never stopped; its answer is the last "
                        "output.")
    else:
        stop = f"ran {r['timings']['iterations_done']}"
        curves[name] = C.psnr_curve(h)
    if not is_es and at_n is not None:
        findings.append(f"{name}: PSNR {'rose' if r['psnr_final'] >= at_n else 'fell'} by "
                        f"{abs(r['psnr_final'] - at_n):.2f} dB between iteration {n} and {2 * n}; the final "
                        f"PSNR is {r['psnr_best_oracle'] - r['psnr_final']:.2f} dB below the best.")
    return [name, stop, fmt(at_n), fmt(r["psnr_final"]), _best(r), fmt(r["psnr_best_oracle"] - r["psnr_final"]),
            len(_events(r)), len(r["guard_recoveries"])]


def _short(r, reason=None) -> dict:
    if not r:
        return {"not_run": reason}
    return {"unit": r["unit"], "psnr_final": r["psnr_final"], "oracle_psnr_best": r["psnr_best_oracle"],
            "oracle_best_iteration": r["best_iteration_oracle"], "destabilisations": len(_events(r)),
            "guard_recoveries": len(r["guard_recoveries"]), "early_stop": r.get("early_stop"),
            "parameters": r["parameters"], "s_per_iteration": r["timings"]["s_per_iteration"],
            "dip_s": r["timings"]["dip_s"]}
