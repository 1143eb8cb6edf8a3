"""The subcommands that are not one task run: ``dip demo``, ``dip presets`` and ``dip batch``."""

from __future__ import annotations

import sys

import numpy as np

from ..config import PRESETS, parse_settings
from ..tasks import TASKS_BY_NAME
from .arguments import _channel_axis, _check_tiling, _option_value, _tile_side
from .report import INTERRUPTED
from .running import run_task


def cmd_demo(args) -> int:
    """Kate with the paper's text mask, at 256x256 with the CPU preset (the paper's is 512, 'text')."""
    from ..budget import DEFAULT_BUDGET_S
    from ..io import load_sample
    from ..masks import load_mask
    from ..plots import plot_panel

    image = load_sample("dip/kate.png")
    mask = load_mask(_sample_path("dip/kate_mask.png"))
    if not args.full_size:
        image = _downscale2(image)
        mask = _downscale2(mask.astype(np.float32)) > 0.99  # a pixel touched by text stays missing
    overrides = {"iterations": args.iterations} if args.iterations else {"budget": args.budget or DEFAULT_BUDGET_S}
    if args.device:
        overrides["device"] = args.device
    name = "kate"
    result, written = run_task("inpaint", image, mask=mask, reference=image, output_dir=args.output_dir,
                               name=name, quiet=args.quiet, preset="text" if args.full_size else "cpu",
                               report_every=25, overwrite=True, **overrides)  # its own demo files
    s = result.history.summary
    panel = plot_panel(
        [result.corrupted, result.classical, result.image, image],
        [f"corrupted ({s['psnr_corrupted']:.2f} dB)",
         f"biharmonic, {s['classical_seconds']:.1f} s ({s['psnr_classical']:.2f} dB)",
         f"napari-dip, {result.history.timings['iterations']} it ({s['psnr_answer']:.2f} dB)",
         "original"],
        args.output_dir / f"{name}_panel.png")
    print(f"  {'panel':10s} {panel}")
    return INTERRUPTED if result.stopped else 0


def _sample_path(name):
    from ..io import data_path

    return data_path(name)


def _downscale2(image: np.ndarray) -> np.ndarray:
    """2x2 box average, keeping dtype."""
    h, w = image.shape[:2]
    blocks = image[: h // 2 * 2, : w // 2 * 2].astype(np.float64)
    blocks = blocks.reshape(h // 2, 2, w // 2, 2, *image.shape[2:]).mean(axis=(1, 3))
    if image.dtype.kind in "iu":
        return np.rint(blocks).astype(image.dtype)
    return blocks.astype(image.dtype)


def cmd_presets(args) -> int:
    from ..tasks import preset_task

    for name, entry in PRESETS.items():
        cfg = entry.config
        net = {k: v for k, v in cfg.network.to_dict().items() if k != "input_channels"}
        print(f"{name:8s} {entry.description}")
        print(f"         task={preset_task(name) or 'any'} input={cfg.input_kind}x{cfg.network.input_channels} "
              f"lr={cfg.lr} iterations={cfg.iterations} sigma_p={cfg.sigma_p:.4g} ema={cfg.ema}")
        print(f"         network {cfg.network.architecture}: " + " ".join(f"{k}={v}" for k, v in net.items()
                                               if getattr(type(cfg.network)(), k, None) != v or k == "scales"))
    return 0


def cmd_batch(args) -> int:
    """``dip batch``: every image one Dask task; finished items are kept and skipped next time."""
    from tqdm import tqdm

    from ..batch import collect, connect, not_images, restore_many

    _check_tiling(args)
    items = collect(args.sources, mask=args.mask, mask_pattern=args.mask_pattern,
                    reference_pattern=args.reference_pattern)
    passed_over = not_images(args.sources)
    if passed_over and not args.quiet:
        print(f"dip batch: passing over {len(passed_over)} entr{'y' if len(passed_over) == 1 else 'ies'} that "
              f"are not images ({', '.join(passed_over[:8])}{' ...' if len(passed_over) > 8 else ''})")
    settings = _batch_settings(args)
    client = connect(args.scheduler) if args.scheduler else None
    bar = tqdm(total=len(items), desc=f"dip batch {args.task}", unit="image", disable=args.quiet)
    try:
        summary = restore_many(items, args.output_dir, client=client, workers=args.workers,
                               overwrite=args.overwrite, callback=lambda entry: bar.update(1), **settings)
    finally:
        bar.close()
        if client is not None:  # else it would outlive the command and keep dask pointed at it
            client.close()
    print(f"{len(summary.done)} restored, {len(summary.skipped)} already done, {len(summary.failed)} failed "
          f"in {summary.seconds:.1f} s on {summary.workers} worker(s)"
          + (f"; dashboard {summary.dashboard}" if summary.dashboard else ""))
    for entry in summary.failed:
        print(f"  failed {entry['name']}: {entry['error']}", file=sys.stderr)
    print(f"  summary    {args.output_dir / 'batch_summary.json'}")
    return 1 if summary.failed else 0


def _batch_settings(args) -> dict:
    """The flags given as ``restore_many``'s settings: only those given, so that a batch finished
    before an option existed is still the same batch (and its items are skipped)."""
    settings = dict(task=args.task, **parse_settings(args.set))
    # only when not the default: a batch finished before these options existed is still the same batch
    if args.mask_observed != "white":
        settings["mask_observed"] = args.mask_observed
    channel_axis = _channel_axis(args.channel_axis)
    if channel_axis != "auto":
        settings["channel_axis"] = channel_axis
    for name in ("iterations", "device", "validate", "keep_observed", "preset", "threads"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if TASKS_BY_NAME[args.task].mask == "random":
        settings.update(missing_fraction=args.fraction, mask_seed=args.mask_seed)
    if args.tile is not None:
        settings["tile"] = _tile_side(args.tile)
        if args.overlap is not None:
            settings["overlap"] = args.overlap
    for option in TASKS_BY_NAME[args.task].options:
        if getattr(args, option.name) is not None:
            settings[option.name] = _option_value(option, getattr(args, option.name))
    return settings
