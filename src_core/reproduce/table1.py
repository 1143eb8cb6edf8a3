"""Table 1 of the paper: the 11 images with 50% of their pixels missing.

For every image and mask seed (one *unit*): a Bernoulli mask, the two
classical baselines on that mask (biharmonic, TV), and one DIP run.  Units
are saved as they finish; the tables are rebuilt from the saved units at
the end of every invocation.
"""

from __future__ import annotations

import time
import numpy as np

from ..errors import DIPError
from . import common as C
from ..classical import biharmonic, tv_inpaint
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
    ``device`` and ``compile_mode`` choose where and with which kernels the
    runs go, not what they compute, so they stay outside the fingerprint and
    each unit records its own (a table may be finished on another GPU, or
    with ``reduce-overhead``, which nearly halves a 512x512 iteration's time).
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
    device = run["device"]
    settings = table1_settings(preset, overrides)
    images = list(images) if images else list(C.TABLE1_IMAGES)
    seeds = [int(s) for s in (seeds if seeds is not None else PRESETS[preset]["seeds"])]
    if len(set(images)) != len(images) or len(set(seeds)) != len(seeds) or not images or not seeds:
        raise DIPError("give each image and each seed once (and at least one of each).")
    if any(s < 0 for s in seeds):
        raise DIPError(f"seeds must be whole numbers >= 0 (got {seeds}).")
    label, is_paper = C.setting_label(preset, overrides, _details(settings))
    command = command or C.python_command("run_table1", output_dir=str(output_dir), preset=preset,
                                          images=images, seeds=seeds, overrides=overrides or None,
                                          **C.recorded(run),
                                          data_dir=data_dir and str(data_dir),
                                          baselines_only=baselines_only or None)
    config = RunConfig.from_dict(settings["config"]).replace(**run).validate()
    if not baselines_only:
        resolve_device(device)

    # every image is read (and checked) before any work starts
    data = {}
    for name in images:
        path = C.resolve_image(name, data_dir, "table1")
        original = C.load_unit_image(path)
        reference = C.prepare_image(original, settings["prepare"])
        problem = config.network.size_problem(*reference.shape[1:])
        if problem:
            raise DIPError(f"image {path} after preparation: {problem}")
        data[name] = dict(path=path, sha256=C.file_sha256(path), original_shape=list(original.shape),
                          reference=reference)

    env = C.environment()
    folder = C.ResultsFolder(output_dir, COMMAND, settings).open(env)
    units = [(name, seed) for name in images for seed in seeds]
    uid = {u: f"{u[0]}_seed{u[1]}" for u in units}            # baselines + DIP
    buid = {u: f"{u[0]}_seed{u[1]}.baselines" for u in units}  # baselines only

    def checked(unit, key):
        record = folder.load(key)
        if record.get("image_sha256") != data[unit[0]]["sha256"]:
            raise DIPError(f"{folder.unit_path(key)} was computed from another {unit[0]} image "
                           f"(sha256 {str(record.get('image_sha256'))[:12]}..., now "
                           f"{data[unit[0]]['sha256'][:12]}...); refusing to mix them.")
        return record

    full = {u for u in units if folder.has(uid[u]) and checked(u, uid[u])}
    partial = {u for u in units if u not in full and folder.has(buid[u]) and checked(u, buid[u])}
    if baselines_only:
        pending = [u for u in units if u not in full and u not in partial]
        progress = C.Progress(len(units), len(units) - len(pending), f"table1 baselines ({preset})", quiet)
    else:
        pending = [u for u in units if u not in full]
        iters = config.iterations
        progress = C.Progress(len(units) * iters, len(full) * iters, f"table1 ({preset})", quiet)
    progress.write(f"table1: {len(full)} of {len(units)} image/seed units done in {output_dir}"
                   + (f", {len(partial)} with baselines only" if partial else "") + f"; {label}")

    def base_of(unit):
        if unit in partial:
            return folder.load(buid[unit])
        return _baselines(unit[0], unit[1], data[unit[0]], settings, command, env)

    def save(unit, base_record, dip):
        record, arrays = dip
        base_record = {k: v for k, v in base_record.items() if k not in ("unit", "fingerprint", "finished")}
        merged = dict(base_record, **record)
        for key in ("psnr", "ssim", "timings"):
            merged[key] = {**base_record[key], **record[key]}
        folder.save(uid[unit], merged, arrays)

    try:
        for unit in pending if baselines_only else ():
            progress.start(f"{unit[0]} seed {unit[1]}")
            folder.save(buid[unit], base_of(unit))
            progress.bar.update(1)
        for name in () if baselines_only else dict.fromkeys(n for n, _ in pending):
            todo = [s for n, s in pending if n == name]
            if batch_seeds and len(todo) > 1:
                progress.start(f"{name} seeds {','.join(map(str, todo))}")
                bases = [base_of((name, s)) for s in todo]
                dips = _dip_restarts(todo, data[name], settings, config, progress, command, env)
                for seed, base_record, dip in zip(todo, bases, dips):
                    save((name, seed), base_record, dip)
                progress.finish(iters * len(todo))
                continue
            for seed in todo:
                progress.start(f"{name} seed {seed}")
                base_record = base_of((name, seed))
                save((name, seed), base_record, _dip(name, seed, data[name], settings, config, progress,
                                                     command, env))
                progress.finish(iters)
    finally:
        progress.close()

    records = {}
    for u in units:
        if folder.has(uid[u]):
            records[u] = folder.load(uid[u])
        elif folder.has(buid[u]):
            records[u] = _without_dip(folder.load(buid[u]))
    return write_outputs(folder, records, images, seeds, settings, label, is_paper, command, env)


def _without_dip(record: dict) -> dict:
    """A baselines-only unit in the shape of a full one, with the DIP fields empty."""
    record = dict(record)
    record["psnr"] = dict(record["psnr"], dip_final=None, dip_best_oracle=None, dip_kept=None, dip_holes=None)
    record["ssim"] = dict(record["ssim"], dip_final=None)
    record["timings"] = dict(record["timings"], dip_s=None, dip_s_per_iteration=None)
    record.update(best_iteration_oracle=None, destabilisation_events=[], guard_recoveries=0, device=None,
                  history={"iterations": [], "psnr": []}, dip_done=False)
    return record


def _baselines(name, seed, item, settings, command, env):
    ref = item["reference"]
    mask = _mask(item, settings, seed)
    t0 = time.perf_counter()
    bih = biharmonic(ref, mask)
    t_bih = time.perf_counter() - t0
    tv_info = {}
    tv = tv_inpaint(ref, mask, max_iter=TV_PARAMS["max_iter"], tol=TV_PARAMS["tol"], info=tv_info)
    with_ssim = settings["config"]["compute_ssim"]
    record = {
        "image": name, "image_file": C.display_path(item["path"]), "image_sha256": item["sha256"],
        "original_shape": item["original_shape"], "shape": list(ref.shape), "seed": seed,
        "mask_seed": seed, "network_seed": seed, "observed_fraction": float(mask.mean()),
        "psnr": {"corrupted": C.psnr(ref * mask, ref), "biharmonic": C.psnr(bih, ref), "tv": C.psnr(tv, ref),
                 "biharmonic_holes": C.psnr_holes(bih, ref, mask), "tv_holes": C.psnr_holes(tv, ref, mask)},
        "ssim": {"biharmonic": C.ssim(bih, ref) if with_ssim else None, "tv": C.ssim(tv, ref) if with_ssim else None},
        "timings": {"biharmonic_s": t_bih, "tv_s": tv_info.get("seconds"), "tv_iterations": tv_info.get("iterations")},
        "baselines_command": command, "baselines_environment": C.run_env(env),
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
        "batched_with_seeds": outcome.batch_seeds, "device": outcome.device, "config": dict(cfg.to_dict(), device=outcome.device),
        "history": history, "command": command, "dip_done": True, "environment": C.run_env(env),
        "arrays": "units/<unit>.npz: the DIP output as 8-bit (for viewing; PSNRs use the float output) and the "
                  "mask as packed bits (np.unpackbits(...)[:H*W]); the baselines are recomputed in seconds",
    }
    arrays = {"dip": (np.clip(outcome.output, 0, 1) * 255 + 0.5).astype(np.uint8), "mask": np.packbits(mask)}
    return record, arrays


def write_outputs(folder, records, images, seeds, settings, label, is_paper, command, env) -> dict:
    root = folder.root
    iters = settings["config"]["iterations"]
    report_every = settings["config"]["report_every"]
    per_image = {}
    for name in images:
        recs = [records[(name, s)] for s in seeds]
        stats = {}
        for key in STAT_KEYS:
            stats[key] = C.mean_std([r["psnr"].get(key) for r in recs])
        per_image[name] = dict(
            size="x".join(str(v) for v in recs[0]["shape"][:0:-1]),
            stats=stats,
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

    # mean row: mean of the per-image means; spread: std over seeds of the across-image mean
    mean_row = {}
    for key in STAT_KEYS:
        if any(records[u]["psnr"].get(key) is None for u in records):
            mean_row[key] = (None, None, 0)  # not run (yet) for every image and seed
            continue
        means = [per_image[n]["stats"][key][0] for n in images]
        per_seed = [np.mean([records[(n, s)]["psnr"][key] for n in images]) for s in seeds]
        mean_row[key] = (float(np.mean(means)), C.mean_std(per_seed)[1], len(seeds))
    dip_done = sum(1 for r in records.values() if r["psnr"].get("dip_final") is not None)

    def dip_cell(stat):
        return "not run" if stat[2] == 0 else C.fmt_ms(*stat[:2])
    in_paper = all(n in C.PAPER_DIP for n in images)
    full_set = list(images) == list(C.TABLE1_IMAGES) or set(images) == set(C.TABLE1_IMAGES)

    headers = ["Image", "Size", "Papyan et al. (paper)", "DIP (paper)",
               f"**Ours: DIP, final iteration** (mean ± std, {len(seeds)} seeds)"]
    if is_paper:
        headers.append("Ours − paper DIP")
    headers += ["Ours, observed pixels kept", "Biharmonic (same masks)", "TV (same masks)", "Corrupted input",
                "ORACLE: DIP best iteration (picked with ground truth)", "DIP time / image (s)"]
    rows = []
    for name in images:
        p = per_image[name]
        s = p["stats"]
        row = [name, p["size"], C.fmt(C.PAPYAN.get(name)), C.fmt(C.PAPER_DIP.get(name)),
               f"**{dip_cell(s['dip_final'])}**"]
        if is_paper:
            row.append("not run" if s["dip_final"][0] is None else
                       C.fmt(s["dip_final"][0] - C.PAPER_DIP[name]) if name in C.PAPER_DIP else "n/a")
        row += [dip_cell(s["dip_kept"]), C.fmt_ms(*s["biharmonic"][:2]), C.fmt_ms(*s["tv"][:2]),
                C.fmt(s["corrupted"][0]),
                dip_cell(s["dip_best_oracle"]), C.fmt(p["dip_s"], 0)]
        rows.append(row)
    mean_paper_dip = np.mean([C.PAPER_DIP[n] for n in images]) if in_paper else None
    mean_papyan = np.mean([C.PAPYAN[n] for n in images]) if in_paper else None
    row = ["**mean**", "", C.fmt(mean_papyan), C.fmt(mean_paper_dip), f"**{dip_cell(mean_row['dip_final'])}**"]
    if is_paper:
        row.append("not run" if mean_row["dip_final"][0] is None else
                   C.fmt(mean_row["dip_final"][0] - mean_paper_dip) if in_paper else "n/a")
    row += [dip_cell(mean_row["dip_kept"]), C.fmt_ms(*mean_row["biharmonic"][:2]), C.fmt_ms(*mean_row["tv"][:2]),
            C.fmt(mean_row["corrupted"][0]),
            dip_cell(mean_row["dip_best_oracle"]), C.fmt(C.mean_std([per_image[n]["dip_s"] for n in images])[0], 0)]
    rows.append(row)

    devices = sorted({records[u]["device"] for u in records} - {None})
    unit_commands = sorted({records[u].get(k) for u in records for k in ("command", "baselines_command")}
                           - {command, None})
    dip_s = [records[u]["timings"]["dip_s"] for u in records if records[u]["timings"]["dip_s"] is not None]
    spi = [records[u]["timings"]["dip_s_per_iteration"] for u in records
           if records[u]["timings"]["dip_s_per_iteration"] is not None]
    total_recoveries = sum(p["recoveries"] for p in per_image.values())
    total_events = sum(p["events"] for p in per_image.values())
    warning = "" if is_paper else (f"> **{C.NOT_PAPER.upper()}.** {label}. These numbers are not comparable "
                                   "with the paper's columns; they show the pipeline and the relative order of "
                                   "the methods at this size.\n\n")
    status = []
    if dip_done < len(records):
        status = [f"> **DIP: {dip_done} of {len(records)} image/seed runs done** (the classical baselines are "
                  "complete). Run the command below without `--baselines-only` (for the paper preset: on a "
                  "GPU) in this folder to add the rest; the finished units are reused.", ""]
    md = [
        "# Table 1 reproduction: inpainting with 50% of pixels missing (PSNR, dB)", "",
        warning + f"Setting: **{label}**", "", *status,
        C.md_table(headers, rows), "",
        f"- **Ours**: DIP's PSNR at the last iteration ({iters}), mean ± sample standard deviation over "
        f"mask seeds {seeds}. Seed s draws the Bernoulli mask with seed s and seeds the network weights "
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
        f"- **ORACLE column**: the best PSNR over each DIP run's iterations (checked every {report_every} "
        "iterations), chosen by looking at the ground truth. No method can do this in practice; it is "
        "reported only to show how much stopping at the right time could add, and must not be compared "
        "with the other columns.",
        "- **Papyan et al.** and **DIP (paper)**: the numbers printed in Table 1 of Ulyanov et al. (CVPR 2018), "
        "on the full-size images" + ("." if is_paper else "; not comparable with this preset's numbers."),
        "- PSNR: " + settings["psnr"] + ".",
        "" if full_set else f"- Only these images were run: {', '.join(images)}; the mean row covers them only.",
        "", "## Run", "",
        f"- Command: `{command}`",
        f"- Setting: {label}",
        f"- Images: {C.describe_prep(settings['prepare'])}; {settings['missing_fraction']:.0%} of pixels missing "
        "(Bernoulli mask, the same for DIP and the baselines)",
        f"- Mask seeds: {', '.join(str(s) for s in seeds)}",
        *[f"- {line}" for line in C.describe_environment(folder.created_env, devices, records.values())],
        (f"- Time per image (one seed): DIP {np.mean(dip_s):.1f} s on average ({np.mean(spi):.4f} s/iteration, "
         f"{iters} iterations); " if dip_s else "- Time per image (one seed): DIP not run; ") +
        f"biharmonic {np.mean([p['bih_s'] for p in per_image.values()]):.2f} s; "
        f"TV {np.mean([p['tv_s'] for p in per_image.values()]):.2f} s. Total DIP time: {np.sum(dip_s) / 60:.1f} min.",
        f"- Destabilisation: {total_events} falls of the fit (the fit PSNR more than 5 dB below its best of the "
        f"previous 100 iterations) and {total_recoveries} guard recoveries, over {dip_done} DIP runs; "
        f"{sum(p['stopped_early'] for p in per_image.values())} of them stopped before iteration {iters} "
        "because the fit fell at 3 checks in a row from the same weights (their answer is the estimate "
        "of the last good check).",
        f"- Results folder fingerprint: `{folder.fingerprint}` (`fingerprint.json` holds the settings)",
    ]
    if unit_commands:
        md.append("- Some units were computed by earlier invocations with the same configuration: "
                  + "; ".join(f"`{c}`" for c in unit_commands))
    md += ["", "## Configuration of every DIP run (`seed` = the mask seed of the unit)", "",
           C.config_block(settings["config"]), "",
           "Files: `table1.csv` (this table), `table1_per_seed.csv` (every run), `table1.json` "
           "(everything, with the per-seed values), `curves/<image>.png` (PSNR over iterations), "
           "`table1_curves.png` (all images), `units/` (one JSON + arrays per image and seed).", ""]
    C.write_text_atomic(root / "table1.md", "\n".join(md))

    csv_headers = ["image", "size", "papyan_paper", "dip_paper", "dip_final_mean", "dip_final_std",
                   "dip_kept_mean", "dip_kept_std", "biharmonic_mean", "biharmonic_std", "tv_mean", "tv_std",
                   "corrupted_mean", "oracle_dip_best_mean", "oracle_dip_best_std", "holes_dip_mean",
                   "holes_biharmonic_mean", "holes_tv_mean", "n_seeds", "dip_seconds_mean", "setting"]
    csv_rows = []

    def stat_cells(st):
        return [st["dip_final"][0], st["dip_final"][1], st["dip_kept"][0], st["dip_kept"][1],
                st["biharmonic"][0], st["biharmonic"][1], st["tv"][0], st["tv"][1], st["corrupted"][0],
                st["dip_best_oracle"][0], st["dip_best_oracle"][1], st["dip_holes"][0],
                st["biharmonic_holes"][0], st["tv_holes"][0]]

    for name in images:
        csv_rows.append([name, per_image[name]["size"], C.PAPYAN.get(name), C.PAPER_DIP.get(name),
                         *stat_cells(per_image[name]["stats"]), len(seeds), per_image[name]["dip_s"], label])
    csv_rows.append(["mean", "", mean_papyan and float(mean_papyan), mean_paper_dip and float(mean_paper_dip),
                     *stat_cells(mean_row), len(seeds), float(np.mean(dip_s)) if dip_s else None, label])
    C.write_csv(root / "table1.csv", csv_headers, csv_rows)

    seed_headers = ["image", "seed", "mask_seed", "network_seed", "size", "observed_fraction",
                    "psnr_corrupted", "psnr_biharmonic", "psnr_tv", "psnr_dip_final", "psnr_dip_observed_kept",
                    "holes_psnr_biharmonic", "holes_psnr_tv", "holes_psnr_dip", "ssim_dip_final",
                    "oracle_psnr_dip_best", "oracle_best_iteration", "dip_seconds", "dip_s_per_iteration",
                    "guard_recoveries", "destabilisation_events", "device", "setting"]
    seed_rows = []
    for name in images:
        for s in seeds:
            r = records[(name, s)]
            seed_rows.append([name, s, r["mask_seed"], r["network_seed"], per_image[name]["size"],
                              r["observed_fraction"], r["psnr"]["corrupted"], r["psnr"]["biharmonic"],
                              r["psnr"]["tv"], r["psnr"]["dip_final"], r["psnr"].get("dip_kept"),
                              r["psnr"].get("biharmonic_holes"), r["psnr"].get("tv_holes"),
                              r["psnr"].get("dip_holes"), r["ssim"]["dip_final"],
                              r["psnr"]["dip_best_oracle"], r["best_iteration_oracle"], r["timings"]["dip_s"],
                              r["timings"]["dip_s_per_iteration"], r["guard_recoveries"],
                              len(C.merge_events(r["destabilisation_events"])), r["device"], label])
    C.write_csv(root / "table1_per_seed.csv", seed_headers, seed_rows)

    summary = {
        "table": "Table 1 (50% missing), PSNR dB", "setting": label, "paper_setting": is_paper,
        "not_the_paper_setting": not is_paper, "command": command, "fingerprint": folder.fingerprint,
        "settings": settings, "environment_at_folder_creation": folder.created_env,
        "environment_of_each_run": "units/<unit>.json", "devices": devices, "seeds": seeds,
        "dip_runs_done": dip_done, "units": len(records),
        "columns": {"dip_final": "ours: DIP PSNR at the final iteration",
                    "dip_kept": "ours with the observed pixels pasted back (no ground truth needed)",
                    "*_holes": "PSNR over the missing pixels only",
                    "dip_best_oracle": "ORACLE: best PSNR over iterations, chosen with the ground truth",
                    "biharmonic": "skimage inpaint_biharmonic on the same masks",
                    "tv": "total-variation inpainting on the same masks",
                    "corrupted": "missing pixels set to 0",
                    "paper_dip": "Ulyanov et al. Table 1", "papyan": "Papyan et al. as printed in Table 1"},
        "images": {n: {"size": per_image[n]["size"], "paper_dip": C.PAPER_DIP.get(n), "papyan": C.PAPYAN.get(n),
                       **{k: {"mean": v[0], "std": v[1], "n": v[2]} for k, v in per_image[n]["stats"].items()},
                       "oracle_best_iterations": per_image[n]["best_its"],
                       "dip_seconds_mean": per_image[n]["dip_s"],
                       "per_seed": {str(s): {"psnr": records[(n, s)]["psnr"], "ssim": records[(n, s)]["ssim"],
                                             "best_iteration_oracle": records[(n, s)]["best_iteration_oracle"]}
                                    for s in seeds}}
                   for n in images},
        "mean": {"paper_dip": mean_paper_dip, "papyan": mean_papyan,
                 **{k: {"mean": v[0], "std_over_seeds": v[1]} for k, v in mean_row.items()}},
        "time": {"dip_s_mean": float(np.mean(dip_s)) if dip_s else None,
                 "dip_s_per_iteration_mean": float(np.mean(spi)) if spi else None,
                 "dip_total_s": float(np.sum(dip_s))},
    }
    C.write_json(root / "table1.json", summary)

    # PSNR curves: one plot per image, and one grid
    panels = {}
    for name in images:
        if per_image[name]["stats"]["dip_final"][2] == 0:
            continue  # no DIP run for this image yet
        curves = {}
        for s in seeds:
            h = records[(name, s)]["history"]
            if h["iterations"]:
                curves[f"DIP seed {s}"] = (h["iterations"], h["psnr"])
        st = per_image[name]["stats"]
        levels = [(st["biharmonic"][0], "biharmonic (mean)"), (st["tv"][0], "TV (mean)")]
        if name in C.PAPER_DIP:
            levels.append((C.PAPER_DIP[name], "paper DIP (full size)" if not is_paper else "paper DIP"))
        finals = [st["dip_final"][0]] + [v for v, _ in levels if v is not None]
        ylim = (min(finals) - 8, max(finals + [st["dip_best_oracle"][0] or 0]) + 1.5)
        plot_curves(curves, root / "curves" / f"{name}.png",
                    title=f"{name} ({per_image[name]['size']}), 50% missing: PSNR over iterations", label=label,
                    levels=levels, ylim=ylim)
        panels[f"{name} ({per_image[name]['size']})"] = {"curves": curves, "levels": levels}
    if panels:
        plot_curve_grid(panels, root / "table1_curves.png",
                        "Table 1: DIP PSNR over iterations (dB), 50% missing", label)
    return {"folder": str(root), "markdown": str(root / "table1.md"), "summary": C.clean_json(summary)}
