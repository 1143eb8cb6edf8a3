"""Table 1 of the paper: the 11 images with 50% of their pixels missing.

For every image and mask seed (one *unit*): a Bernoulli mask, the two
classical baselines on that mask (biharmonic, TV), and one DIP run.  Units
are saved as they finish; the tables are rebuilt from the saved units at
the end of every invocation.
"""

from __future__ import annotations

import time

import numpy as np

from ..classical import biharmonic, tv_inpaint
from ..errors import DIPError
from ..reports import config_block, environment_bullets, fmt, fmt_ms, md_table, write_csv
from . import common as C
from .figures import plot_curve_grid, plot_curves

COMMAND = "table1"
STAT_KEYS = ("dip_final", "dip_kept", "biharmonic", "tv", "corrupted", "dip_best_oracle", "dip_holes",
             "biharmonic_holes", "tv_holes")
DEFAULT_SEEDS = (0, 1, 2)
TV_PARAMS = {"max_iter": 3000, "tol": 1e-5}

#: What each preset changes; the paper preset is the engine's "table1" preset unchanged.
PRESETS = {
    "paper": dict(prepare={"mode": "full"}, config={}, seeds=DEFAULT_SEEDS),
    "quick": dict(prepare={"mode": "crop", "size": 128},
                  config=dict(down_channels=32, up_channels=32, lr=0.01, iterations=1500, report_every=10),
                  seeds=DEFAULT_SEEDS),
    "tiny": dict(prepare={"mode": "crop", "size": 32},
                 config=dict(scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=6,
                             report_every=2, compute_ssim=False),
                 seeds=(0,)),
}


def table1_settings(preset: str = "quick", overrides: dict | None = None) -> dict:
    """Everything that decides a unit's result (the folder fingerprint covers all of it)."""
    from ..config import preset as engine_preset

    C.check_preset(preset)
    overrides = dict(overrides or {})
    spec = PRESETS[preset]
    cfg = engine_preset("table1", **spec["config"])
    cfg = cfg.replace(**overrides).validate()
    config = cfg.to_dict()
    config.pop("device")
    return {"command": COMMAND, "preset": preset, "overrides": overrides, "prepare": spec["prepare"],
            "missing_fraction": 0.5, "config": config,
            "seed_rule": "seed s: Bernoulli mask drawn with mask_seed s; network weights and input z seeded with s",
            "baselines": {"biharmonic": "skimage.restoration.inpaint_biharmonic",
                          "tv": dict(TV_PARAMS, method="Chambolle-Pock, observed pixels kept exactly")},
            "psnr": "whole image, data_range 1, output clipped to [0, 1], float output (not 8-bit)"}


def _details(settings: dict) -> str:
    cfg = settings["config"]
    net = cfg["network"]
    return (f"{C.describe_prep(settings['prepare'])}, {net['scales']}-scale {net['down_channels']}-channel network, "
            f"lr {cfg['lr']}, {cfg['iterations']} iterations; the paper: full-size images, 5-scale "
            "128-channel network, lr 0.001, 11000 iterations")


def run_table1(output_dir, preset: str = "quick", images=None, seeds=None, overrides: dict | None = None,
               device: str = "auto", compile_mode: str = "auto", data_dir=None, quiet: bool = False,
               command: str | None = None,
               baselines_only: bool = False, batch_seeds: bool = False) -> dict:
    """Run (or resume) the Table 1 reproduction into ``output_dir``; returns the summary.

    ``images``: names among the 11 (default all); ``seeds``: mask seeds
    (default 0, 1, 2); ``overrides``: RunConfig/NetworkConfig fields
    (changing them changes the configuration fingerprint); ``data_dir``: a
    folder with ``<name>.png`` instead of the shipped images.
    ``device`` and ``compile_mode`` (and a precision or memory format among
    the overrides) choose how the runs go, not what they compute, so they
    stay outside the fingerprint and each unit records its own (a table may
    be finished on another GPU, or with ``reduce-overhead``, which nearly
    halves a 512x512 iteration's time).
    ``baselines_only``: compute only the classical baselines on the
    preset's masks (no DIP; minutes on a CPU even at full size); a later
    run without it in the same folder reuses them and adds DIP.
    ``batch_seeds``: fit an image's seeds together, as one batch of networks;
    the results are those of separate runs.  Off by default: on an H100 one
    vmapped pass over three 512x512 networks took 47.5 ms against 13.0 ms for
    one (docs/benchmarks.md), so separate runs are faster there.
    """
    from ..config import RunConfig
    from ..devices import resolve_device

    overrides = dict(overrides or {})
    run = C.run_options(overrides, device, compile_mode)
    settings = table1_settings(preset, overrides)
    images, seeds = _images_and_seeds(images, seeds, preset)
    label, is_paper = C.setting_label(preset, overrides, _details(settings))
    command = command or C.python_command("run_table1", output_dir=str(output_dir), preset=preset,
                                          images=images, seeds=seeds, **C.recorded(run, overrides),
                                          data_dir=data_dir and str(data_dir),
                                          baselines_only=baselines_only or None)
    config = RunConfig.from_dict(settings["config"]).replace(**run).validate()
    if not baselines_only:
        resolve_device(run["device"])
    data = _load_images(images, data_dir, settings["prepare"], config)

    env = C.environment()
    folder = C.ResultsFolder(output_dir, COMMAND, settings).open(env)
    units = _Units(folder, data, settings, command, env, images, seeds)
    pending = units.pending(baselines_only)
    progress = units.progress(pending, baselines_only, config, preset, quiet)
    progress.write(f"table1: {len(units.full)} of {len(units.units)} image/seed units done in {output_dir}"
                   + (f", {len(units.partial)} with baselines only" if units.partial else "") + f"; {label}")
    try:
        if baselines_only:
            units.run_baselines(pending, progress)
        else:
            units.run_dip(pending, config, progress, batch_seeds)
    finally:
        progress.close()
    return _Table1Report(folder, units.records(), images, seeds, settings, label, is_paper, command).write()


def _images_and_seeds(images, seeds, preset: str) -> tuple[list, list]:
    """The images and seeds asked for (default: all 11, the preset's seeds), each once."""
    images = list(images) if images else list(C.TABLE1_IMAGES)
    seeds = [int(s) for s in (seeds if seeds is not None else PRESETS[preset]["seeds"])]
    if len(set(images)) != len(images) or len(set(seeds)) != len(seeds) or not images or not seeds:
        raise DIPError("give each image and each seed once (and at least one of each).")
    if any(s < 0 for s in seeds):
        raise DIPError(f"seeds must be whole numbers >= 0 (got {seeds}).")
    return images, seeds


def _load_images(images, data_dir, prepare: dict, config) -> dict:
    """Every image read, prepared and checked before any work starts (an error names the file)."""
    data = {}
    for name in images:
        path = C.resolve_image(name, data_dir, "table1")
        original = C.load_unit_image(path)
        reference = C.prepare_image(original, prepare)
        problem = config.network.size_problem(*reference.shape[1:])
        if problem:
            raise DIPError(f"image {path} after preparation: {problem}")
        data[name] = dict(path=path, sha256=C.file_sha256(path), original_shape=list(original.shape),
                          reference=reference)
    return data


def _uid(unit) -> str:  # the file name of a unit with its baselines and its DIP run
    return f"{unit[0]}_seed{unit[1]}"


def _baselines_uid(unit) -> str:  # ... with its baselines only (--baselines-only)
    return f"{_uid(unit)}.baselines"


class _Units:
    """The image/seed units of one invocation and what the results folder holds of each: done
    (``full``), baselines only (``partial``), or nothing yet."""

    def __init__(self, folder, data: dict, settings: dict, command: str, env: dict, images, seeds):
        self.folder, self.data, self.settings, self.command, self.env = folder, data, settings, command, env
        self.units = [(name, seed) for name in images for seed in seeds]
        self.full = {u for u in self.units if folder.has(_uid(u)) and self._checked(u, _uid(u))}
        self.partial = {u for u in self.units if u not in self.full and folder.has(_baselines_uid(u))
                        and self._checked(u, _baselines_uid(u))}

    def _checked(self, unit, key: str) -> dict:
        """The saved record, refused if it was computed from another file of the image."""
        record = self.folder.load(key)
        sha256 = self.data[unit[0]]["sha256"]
        if record.get("image_sha256") != sha256:
            raise DIPError(f"{self.folder.unit_path(key)} was computed from another {unit[0]} image "
                           f"(sha256 {str(record.get('image_sha256'))[:12]}..., now "
                           f"{sha256[:12]}...); refusing to mix them.")
        return record

    def pending(self, baselines_only: bool) -> list:
        done = self.full | self.partial if baselines_only else self.full
        return [u for u in self.units if u not in done]

    def progress(self, pending: list, baselines_only: bool, config, preset: str, quiet: bool):
        """One bar: over the units for baselines only, else over every DIP iteration."""
        if baselines_only:
            return C.Progress(len(self.units), len(self.units) - len(pending), f"table1 baselines ({preset})",
                              quiet)
        iters = config.iterations
        return C.Progress(len(self.units) * iters, len(self.full) * iters, f"table1 ({preset})", quiet)

    def baselines(self, unit) -> dict:
        """The unit's baselines: those an earlier ``--baselines-only`` run saved, else computed now."""
        if unit in self.partial:
            return self.folder.load(_baselines_uid(unit))
        return _baselines(unit[0], unit[1], self.data[unit[0]], self.settings, self.command, self.env)

    def run_baselines(self, pending: list, progress) -> None:
        for unit in pending:
            progress.start(f"{unit[0]} seed {unit[1]}")
            self.folder.save(_baselines_uid(unit), self.baselines(unit))
            progress.bar.update(1)

    def run_dip(self, pending: list, config, progress, batch_seeds: bool) -> None:
        """DIP for the pending units image by image, an image's seeds as one batch if asked."""
        for name in dict.fromkeys(n for n, _ in pending):
            todo = [s for n, s in pending if n == name]
            if batch_seeds and len(todo) > 1:
                self._run_batch(name, todo, config, progress)
                continue
            for seed in todo:
                progress.start(f"{name} seed {seed}")
                base_record = self.baselines((name, seed))
                self._save((name, seed), base_record, _dip(name, seed, self.data[name], self.settings, config,
                                                           progress, self.command, self.env))
                progress.finish(config.iterations)

    def _run_batch(self, name: str, seeds: list, config, progress) -> None:
        progress.start(f"{name} seeds {','.join(map(str, seeds))}")
        bases = [self.baselines((name, s)) for s in seeds]
        dips = _dip_restarts(seeds, self.data[name], self.settings, config, progress, self.command, self.env)
        for seed, base_record, dip in zip(seeds, bases, dips):
            self._save((name, seed), base_record, dip)
        progress.finish(config.iterations * len(seeds))

    def _save(self, unit, base_record: dict, dip) -> None:
        """One record of the baselines and the DIP run, their psnr, ssim and timings merged."""
        record, arrays = dip
        base_record = {k: v for k, v in base_record.items() if k not in ("unit", "fingerprint", "finished")}
        merged = dict(base_record, **record)
        for key in ("psnr", "ssim", "timings"):
            merged[key] = {**base_record[key], **record[key]}
        self.folder.save(_uid(unit), merged, arrays)

    def records(self) -> dict:
        """Every unit the folder holds; one with baselines only has its DIP fields empty."""
        records = {}
        for u in self.units:
            if self.folder.has(_uid(u)):
                records[u] = self.folder.load(_uid(u))
            elif self.folder.has(_baselines_uid(u)):
                records[u] = _without_dip(self.folder.load(_baselines_uid(u)))
        return records


def _without_dip(record: dict) -> dict:
    """A baselines-only unit in the shape of a full one, with the DIP fields empty."""
    record = dict(record)
    record["psnr"] = dict(record["psnr"], dip_final=None, dip_best_oracle=None, dip_kept=None, dip_holes=None)
    record["ssim"] = dict(record["ssim"], dip_final=None)
    record["timings"] = dict(record["timings"], dip_s=None, dip_s_per_iteration=None)
    record.update(best_iteration_oracle=None, destabilisation_events=[], guard_recoveries=0, device=None,
                  history={"iterations": [], "psnr": []}, dip_done=False)
    return record


def classical_baselines(ref: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Biharmonic and TV inpainting of ``ref`` on ``mask``, and their timings (Figure 7's too)."""
    t0 = time.perf_counter()
    bih = biharmonic(ref, mask)
    t_bih = time.perf_counter() - t0
    tv_info = {}
    tv = tv_inpaint(ref, mask, max_iter=TV_PARAMS["max_iter"], tol=TV_PARAMS["tol"], info=tv_info)
    return bih, tv, {"biharmonic_s": t_bih, "tv_s": tv_info.get("seconds"), "tv_iterations": tv_info.get("iterations")}


def _baselines(name, seed, item, settings, command, env):
    ref = item["reference"]
    mask = _mask(item, settings, seed)
    bih, tv, timings = classical_baselines(ref, mask)
    with_ssim = settings["config"]["compute_ssim"]
    record = {
        "image": name, "image_file": C.display_path(item["path"]), "image_sha256": item["sha256"],
        "original_shape": item["original_shape"], "shape": list(ref.shape), "seed": seed,
        "mask_seed": seed, "network_seed": seed, "observed_fraction": float(mask.mean()),
        "psnr": {"corrupted": C.psnr(ref * mask, ref), "biharmonic": C.psnr(bih, ref), "tv": C.psnr(tv, ref),
                 "biharmonic_holes": C.psnr_holes(bih, ref, mask), "tv_holes": C.psnr_holes(tv, ref, mask)},
        "ssim": {"biharmonic": C.ssim(bih, ref) if with_ssim else None, "tv": C.ssim(tv, ref) if with_ssim else None},
        "timings": timings, "baselines_command": command, "baselines_environment": C.run_env(env),
    }
    return record


def _mask(item, settings, seed):
    """The unit's Bernoulli mask: the same for its baselines and its DIP run."""
    from ..masks import bernoulli_mask

    return bernoulli_mask(item["reference"].shape[1:], settings["missing_fraction"], seed)


def _dip(name, seed, item, settings, config, progress, command, env):
    ref = item["reference"]
    mask = _mask(item, settings, seed)
    cfg = config.replace(seed=seed)
    return _dip_record(ref, mask, cfg, C.run_dip(ref, mask, ref, cfg, progress), settings, command, env)


def _dip_restarts(seeds, item, settings, config, progress, command, env):
    """The image's seeds as one batch (one pass over K networks: a GPU's way); a record per seed."""
    ref = item["reference"]
    masks = [_mask(item, settings, seed) for seed in seeds]
    outcomes = C.run_dip_restarts(ref, masks, ref, config, seeds, progress)
    return [_dip_record(ref, mask, config.replace(seed=seed), outcome, settings, command, env)
            for seed, mask, outcome in zip(seeds, masks, outcomes)]


def _dip_record(ref, mask, cfg, outcome, settings, command, env):
    history = outcome.history
    best, best_it = C.oracle(history)
    events = C.destabilisation_events(history.pop("loss"))
    final_ssim = C.ssim(outcome.output, ref) if settings["config"]["compute_ssim"] else None
    record = {
        "psnr": {"dip_final": C.psnr(outcome.output, ref), "dip_best_oracle": best,
                 "dip_kept": C.psnr(C.observed_kept(outcome.output, ref, mask), ref),
                 "dip_holes": C.psnr_holes(outcome.output, ref, mask)},
        "ssim": {"dip_final": final_ssim},
        "best_iteration_oracle": best_it,
        "destabilisation_events": events, "guard_recoveries": len(history["recoveries"]),
        "timings": {"dip_s": outcome.wall_s, "dip_s_per_iteration": history["timings"].get("s_per_iteration")},
        "batched_with_seeds": outcome.batch_seeds, "device": outcome.device,
        "config": dict(cfg.to_dict(), device=outcome.device),
        "history": history, "command": command, "dip_done": True, "environment": C.run_env(env),
        "arrays": "units/<unit>.npz: the DIP output as 8-bit (for viewing; PSNRs use the float output) and the "
                  "mask as packed bits (np.unpackbits(...)[:H*W]); the baselines are recomputed in seconds",
    }
    arrays = {"dip": C.to_8bit(outcome.output), "mask": np.packbits(mask)}
    return record, arrays


# ----------------------------------------------------------------------------- outputs

def _image_stats(recs: list, iters: int) -> dict:
    """One image's statistics over its seeds: mean, std and count per PSNR column, times, events."""
    return dict(
        size="x".join(str(v) for v in recs[0]["shape"][:0:-1]),
        stats={key: C.mean_std([r["psnr"].get(key) for r in recs]) for key in STAT_KEYS},
        dip_s=C.mean_std([r["timings"]["dip_s"] for r in recs])[0],
        s_per_it=C.mean_std([r["timings"]["dip_s_per_iteration"] for r in recs])[0],
        bih_s=C.mean_std([r["timings"]["biharmonic_s"] for r in recs])[0],
        tv_s=C.mean_std([r["timings"]["tv_s"] for r in recs])[0],
        best_its=[r["best_iteration_oracle"] for r in recs],
        recoveries=sum(r["guard_recoveries"] for r in recs),
        stopped_early=sum(1 for r in recs if r["history"]["iterations"]
                          and r["history"]["iterations"][-1] < iters),
        events=sum(len(C.merge_events(r["destabilisation_events"])) for r in recs),
    )


def _dip_cell(stat) -> str:
    return "not run" if stat[2] == 0 else fmt_ms(*stat[:2])


class _Table1Report:
    """Table 1's files (Markdown, CSV, JSON, curves), all from the units' records and the
    statistics computed once here."""

    def __init__(self, folder, records: dict, images: list, seeds: list, settings: dict, label: str,
                 is_paper: bool, command: str):
        self.folder, self.root, self.records, self.images, self.seeds = folder, folder.root, records, images, seeds
        self.settings, self.label, self.is_paper, self.command = settings, label, is_paper, command
        self.iters = settings["config"]["iterations"]
        self.per_image = {name: _image_stats([records[(name, s)] for s in seeds], self.iters) for name in images}
        self.mean_row = self._mean_row()
        self.dip_done = sum(1 for r in records.values() if r["psnr"].get("dip_final") is not None)
        in_paper = all(n in C.PAPER_DIP for n in images)
        self.mean_paper_dip = np.mean([C.PAPER_DIP[n] for n in images]) if in_paper else None
        self.mean_papyan = np.mean([C.PAPYAN[n] for n in images]) if in_paper else None
        self.devices = sorted({records[u]["device"] for u in records} - {None})
        self.dip_s = [records[u]["timings"]["dip_s"] for u in records if records[u]["timings"]["dip_s"] is not None]
        self.spi = [records[u]["timings"]["dip_s_per_iteration"] for u in records
                    if records[u]["timings"]["dip_s_per_iteration"] is not None]

    def _mean_row(self) -> dict:
        """The mean of the per-image means; its spread: the std over seeds of the across-image mean."""
        mean_row = {}
        for key in STAT_KEYS:
            if any(self.records[u]["psnr"].get(key) is None for u in self.records):
                mean_row[key] = (None, None, 0)  # not run (yet) for every image and seed
                continue
            means = [self.per_image[n]["stats"][key][0] for n in self.images]
            per_seed = [np.mean([self.records[(n, s)]["psnr"][key] for n in self.images]) for s in self.seeds]
            mean_row[key] = (float(np.mean(means)), C.mean_std(per_seed)[1], len(self.seeds))
        return mean_row

    def write(self) -> dict:
        self._write_table_csv()
        self._write_per_seed_csv()
        self._plot_curves()
        return C.report_result(self.folder, "table1", self._markdown(), self._summary())

    # --------------------------------------------------------------------- Markdown

    def _markdown(self) -> list[str]:
        warning = C.not_paper_banner(self.label, self.is_paper,
                                     " These numbers are not comparable with the paper's columns; they show the "
                                     "pipeline and the relative order of the methods at this size.")
        status = []
        if self.dip_done < len(self.records):
            status = [f"> **DIP: {self.dip_done} of {len(self.records)} image/seed runs done** (the classical "
                      "baselines are complete). Run the command below without `--baselines-only` (for the paper "
                      "preset: on a GPU) in this folder to add the rest; the finished units are reused.", ""]
        return ["# Table 1 reproduction: inpainting with 50% of pixels missing (PSNR, dB)", "",
                warning + f"Setting: **{self.label}**", "", *status,
                md_table(self._headers(), self._rows()), "",
                *self._notes(), "", *self._run_section(), "",
                "## Configuration of every DIP run (`seed` = the mask seed of the unit)", "",
                config_block(self.settings["config"]), "",
                "Files: `table1.csv` (this table), `table1_per_seed.csv` (every run), `table1.json` "
                "(everything, with the per-seed values), `curves/<image>.png` (PSNR over iterations), "
                "`table1_curves.png` (all images), `units/` (one JSON + arrays per image and seed).", ""]

    def _headers(self) -> list[str]:
        headers = ["Image", "Size", "Papyan et al. (paper)", "DIP (paper)",
                   f"**Ours: DIP, final iteration** (mean ± std, {len(self.seeds)} seeds)"]
        if self.is_paper:
            headers.append("Ours − paper DIP")
        return headers + ["Ours, observed pixels kept", "Biharmonic (same masks)", "TV (same masks)",
                          "Corrupted input", "ORACLE: DIP best iteration (picked with ground truth)",
                          "DIP time / image (s)"]

    def _rows(self) -> list[list]:
        rows = [self._row(name, p["size"], C.PAPYAN.get(name), C.PAPER_DIP.get(name), p["stats"], p["dip_s"])
                for name, p in ((n, self.per_image[n]) for n in self.images)]
        seconds = C.mean_std([self.per_image[n]["dip_s"] for n in self.images])[0]
        rows.append(self._row("**mean**", "", self.mean_papyan, self.mean_paper_dip, self.mean_row, seconds))
        return rows

    def _row(self, first: str, size: str, papyan, paper_dip, stats: dict, seconds) -> list:
        """A row of the table: an image's, or the mean row (``paper_dip`` None: not in the paper)."""
        row = [first, size, fmt(papyan), fmt(paper_dip), f"**{_dip_cell(stats['dip_final'])}**"]
        if self.is_paper:
            ours = stats["dip_final"][0]
            row.append("not run" if ours is None else fmt(ours - paper_dip) if paper_dip is not None else "n/a")
        return row + [_dip_cell(stats["dip_kept"]), fmt_ms(*stats["biharmonic"][:2]), fmt_ms(*stats["tv"][:2]),
                      fmt(stats["corrupted"][0]), _dip_cell(stats["dip_best_oracle"]), fmt(seconds, 0)]

    def _notes(self) -> list[str]:
        full_set = list(self.images) == list(C.TABLE1_IMAGES) or set(self.images) == set(C.TABLE1_IMAGES)
        return [
            f"- **Ours**: DIP's PSNR at the last iteration ({self.iters}), mean ± sample standard deviation over "
            f"mask seeds {self.seeds}. Seed s draws the Bernoulli mask with seed s and seeds the network weights "
            "and the input noise z with s.",
            "- **Ours, observed pixels kept**: the same DIP output with the observed pixels pasted back (a "
            "post-processing step that needs no ground truth). DIP re-synthesises every pixel, observed ones "
            "included, while the classical methods keep the observed pixels exactly; this column separates how "
            "well the holes are filled from how well the observed half is fitted. PSNR over the missing pixels "
            "only, for every method, is in `table1_per_seed.csv` and `table1.json`.",
            "- **Biharmonic** and **TV**: classical inpainting computed here on exactly the same masks (mean ± std "
            "over the same seeds): scikit-image's `inpaint_biharmonic`, and total-variation inpainting with the "
            "observed pixels kept exactly (Chambolle-Pock primal-dual, `src_core/classical.py`).",
            "- **Corrupted input**: the observed image with the missing pixels set to 0.",
            "- **mean** row: the mean of the per-image means; its ± is the standard deviation over seeds of the "
            "average over the images (so it is smaller than the per-image spreads).",
            f"- **ORACLE column**: the best PSNR over each DIP run's iterations (checked every "
            f"{self.settings['config']['report_every']} iterations), chosen by looking at the ground truth. No "
            "method can do this in practice; it is reported only to show how much stopping at the right time "
            "could add, and must not be compared with the other columns.",
            "- **Papyan et al.** and **DIP (paper)**: the numbers printed in Table 1 of Ulyanov et al. (CVPR 2018), "
            "on the full-size images" + ("." if self.is_paper else "; not comparable with this preset's numbers."),
            "- PSNR: " + self.settings["psnr"] + ".",
            "" if full_set else (f"- Only these images were run: {', '.join(self.images)}; the mean row covers "
                                 "them only."),
        ]

    def _run_section(self) -> list[str]:
        settings, per_image = self.settings, self.per_image.values()
        unit_commands = sorted({r.get(k) for r in self.records.values() for k in ("command", "baselines_command")}
                               - {self.command, None})
        md = [
            "## Run", "",
            f"- Command: `{self.command}`",
            f"- Setting: {self.label}",
            f"- Images: {C.describe_prep(settings['prepare'])}; {settings['missing_fraction']:.0%} of pixels "
            "missing (Bernoulli mask, the same for DIP and the baselines)",
            f"- Mask seeds: {', '.join(str(s) for s in self.seeds)}",
            *environment_bullets(self.folder.created_env, self.devices, self.records.values()),
            (f"- Time per image (one seed): DIP {np.mean(self.dip_s):.1f} s on average ({np.mean(self.spi):.4f} "
             f"s/iteration, {self.iters} iterations); " if self.dip_s else "- Time per image (one seed): DIP not run; ")
            + f"biharmonic {np.mean([p['bih_s'] for p in per_image]):.2f} s; TV "
            f"{np.mean([p['tv_s'] for p in per_image]):.2f} s. Total DIP time: {np.sum(self.dip_s) / 60:.1f} min.",
            f"- Destabilisation: {sum(p['events'] for p in per_image)} falls of the fit (the fit PSNR more than "
            f"5 dB below its best of the previous 100 iterations) and {sum(p['recoveries'] for p in per_image)} "
            f"guard recoveries, over {self.dip_done} DIP runs; {sum(p['stopped_early'] for p in per_image)} of "
            f"them stopped before iteration {self.iters} because the fit fell at 3 checks in a row from the same "
            "weights (their answer is the estimate of the last good check).",
            f"- Results folder fingerprint: `{self.folder.fingerprint}` (`fingerprint.json` holds the settings)",
        ]
        if unit_commands:
            md.append("- Some units were computed by earlier invocations with the same configuration: "
                      + "; ".join(f"`{c}`" for c in unit_commands))
        return md

    # --------------------------------------------------------------------- CSV and JSON

    def _write_table_csv(self) -> None:
        headers = ["image", "size", "papyan_paper", "dip_paper", "dip_final_mean", "dip_final_std",
                   "dip_kept_mean", "dip_kept_std", "biharmonic_mean", "biharmonic_std", "tv_mean", "tv_std",
                   "corrupted_mean", "oracle_dip_best_mean", "oracle_dip_best_std", "holes_dip_mean",
                   "holes_biharmonic_mean", "holes_tv_mean", "n_seeds", "dip_seconds_mean", "setting"]

        def stat_cells(st):
            return [st["dip_final"][0], st["dip_final"][1], st["dip_kept"][0], st["dip_kept"][1],
                    st["biharmonic"][0], st["biharmonic"][1], st["tv"][0], st["tv"][1], st["corrupted"][0],
                    st["dip_best_oracle"][0], st["dip_best_oracle"][1], st["dip_holes"][0],
                    st["biharmonic_holes"][0], st["tv_holes"][0]]

        n = len(self.seeds)
        rows = [[name, p["size"], C.PAPYAN.get(name), C.PAPER_DIP.get(name), *stat_cells(p["stats"]), n,
                 p["dip_s"], self.label] for name, p in ((m, self.per_image[m]) for m in self.images)]
        rows.append(["mean", "", self.mean_papyan and float(self.mean_papyan),
                     self.mean_paper_dip and float(self.mean_paper_dip), *stat_cells(self.mean_row), n,
                     float(np.mean(self.dip_s)) if self.dip_s else None, self.label])
        write_csv(self.root / "table1.csv", headers, rows)

    def _write_per_seed_csv(self) -> None:
        headers = ["image", "seed", "mask_seed", "network_seed", "size", "observed_fraction",
                   "psnr_corrupted", "psnr_biharmonic", "psnr_tv", "psnr_dip_final", "psnr_dip_observed_kept",
                   "holes_psnr_biharmonic", "holes_psnr_tv", "holes_psnr_dip", "ssim_dip_final",
                   "oracle_psnr_dip_best", "oracle_best_iteration", "dip_seconds", "dip_s_per_iteration",
                   "guard_recoveries", "destabilisation_events", "device", "setting"]
        rows = []
        for name in self.images:
            for s in self.seeds:
                r = self.records[(name, s)]
                psnr, timings = r["psnr"], r["timings"]
                rows.append([name, s, r["mask_seed"], r["network_seed"], self.per_image[name]["size"],
                             r["observed_fraction"], psnr["corrupted"], psnr["biharmonic"], psnr["tv"],
                             psnr["dip_final"], psnr.get("dip_kept"), psnr.get("biharmonic_holes"),
                             psnr.get("tv_holes"), psnr.get("dip_holes"), r["ssim"]["dip_final"],
                             psnr["dip_best_oracle"], r["best_iteration_oracle"], timings["dip_s"],
                             timings["dip_s_per_iteration"], r["guard_recoveries"],
                             len(C.merge_events(r["destabilisation_events"])), r["device"], self.label])
        write_csv(self.root / "table1_per_seed.csv", headers, rows)

    def _summary(self) -> dict:
        dip_s, spi = self.dip_s, self.spi
        return {
            "table": "Table 1 (50% missing), PSNR dB", "setting": self.label, "paper_setting": self.is_paper,
            "not_the_paper_setting": not self.is_paper, "command": self.command,
            "fingerprint": self.folder.fingerprint, "settings": self.settings,
            "environment_at_folder_creation": self.folder.created_env,
            "environment_of_each_run": "units/<unit>.json", "devices": self.devices, "seeds": self.seeds,
            "dip_runs_done": self.dip_done, "units": len(self.records),
            "columns": {"dip_final": "ours: DIP PSNR at the final iteration",
                        "dip_kept": "ours with the observed pixels pasted back (no ground truth needed)",
                        "*_holes": "PSNR over the missing pixels only",
                        "dip_best_oracle": "ORACLE: best PSNR over iterations, chosen with the ground truth",
                        "biharmonic": "skimage inpaint_biharmonic on the same masks",
                        "tv": "total-variation inpainting on the same masks",
                        "corrupted": "missing pixels set to 0",
                        "paper_dip": "Ulyanov et al. Table 1", "papyan": "Papyan et al. as printed in Table 1"},
            "images": {n: self._image_summary(n) for n in self.images},
            "mean": {"paper_dip": self.mean_paper_dip, "papyan": self.mean_papyan,
                     **{k: {"mean": v[0], "std_over_seeds": v[1]} for k, v in self.mean_row.items()}},
            "time": {"dip_s_mean": float(np.mean(dip_s)) if dip_s else None,
                     "dip_s_per_iteration_mean": float(np.mean(spi)) if spi else None,
                     "dip_total_s": float(np.sum(dip_s))},
        }

    def _image_summary(self, name: str) -> dict:
        p = self.per_image[name]
        per_seed = {str(s): {"psnr": r["psnr"], "ssim": r["ssim"], "best_iteration_oracle": r["best_iteration_oracle"]}
                    for s, r in ((s, self.records[(name, s)]) for s in self.seeds)}
        return {"size": p["size"], "paper_dip": C.PAPER_DIP.get(name), "papyan": C.PAPYAN.get(name),
                **{k: {"mean": v[0], "std": v[1], "n": v[2]} for k, v in p["stats"].items()},
                "oracle_best_iterations": p["best_its"], "dip_seconds_mean": p["dip_s"], "per_seed": per_seed}

    # --------------------------------------------------------------------- curves

    def _plot_curves(self) -> None:
        """PSNR over iterations: one plot per image with a DIP run, and one grid of them all."""
        panels = {}
        for name in self.images:
            if self.per_image[name]["stats"]["dip_final"][2] == 0:
                continue  # no DIP run for this image yet
            curves, levels, ylim = self._image_curves(name)
            size = self.per_image[name]["size"]
            plot_curves(curves, self.root / "curves" / f"{name}.png",
                        title=f"{name} ({size}), 50% missing: PSNR over iterations", label=self.label,
                        levels=levels, ylim=ylim)
            panels[f"{name} ({size})"] = {"curves": curves, "levels": levels}
        if panels:
            plot_curve_grid(panels, self.root / "table1_curves.png",
                            "Table 1: DIP PSNR over iterations (dB), 50% missing", self.label)

    def _image_curves(self, name: str) -> tuple[dict, list, tuple]:
        """An image's curves (one per seed), its baselines' and the paper's levels, and the y range."""
        curves = {}
        for s in self.seeds:
            h = self.records[(name, s)]["history"]
            if h["iterations"]:
                curves[f"DIP seed {s}"] = C.psnr_curve(h)
        st = self.per_image[name]["stats"]
        levels = [(st["biharmonic"][0], "biharmonic (mean)"), (st["tv"][0], "TV (mean)")]
        if name in C.PAPER_DIP:
            levels.append((C.PAPER_DIP[name], "paper DIP (full size)" if not self.is_paper else "paper DIP"))
        finals = [st["dip_final"][0]] + [v for v, _ in levels if v is not None]
        return curves, levels, (min(finals) - 8, max(finals + [st["dip_best_oracle"][0] or 0]) + 1.5)
