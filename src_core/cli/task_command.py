"""``dip <task> IMAGE``: the subcommand of every registered task, from its flags to one run."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..errors import DIPError
from ..tasks import TASKS_BY_NAME
from .arguments import _channel_axis, _check_tiling, _option_value, _overrides, _tile_side
from .report import INTERRUPTED
from .running import run_task, run_tiled_task

#: the input file types the outputs keep; any other input's outputs are PNG
_KEPT_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


def cmd_task(args) -> int:
    """Read the inputs, turn the flags into the run's settings, and run it (tiled, on a cluster, or here)."""
    _check_name(args.name)
    _check_tiling(args)
    asked_axis = _channel_axis(args.channel_axis)
    image, channel_axis, form, mask, reference = _read_inputs(args, asked_axis)
    kwargs = _run_settings(args, TASKS_BY_NAME[args.command], channel_axis)
    if args.tile is None:  # tiles are 2D: a z-stack's tiles get a 2D classical partner
        stack = args.stack or form.stack
        kwargs.update(stack=stack, spacing=args.spacing or (form.spacing if stack == "z" else None))
    suffix = args.image.suffix.lower() if args.image.suffix.lower() in _KEPT_SUFFIXES else ".png"
    common = dict(mask=mask, reference=reference, output_dir=args.output_dir, name=args.name or args.image.stem,
                  suffix=suffix, quiet=args.quiet, inputs=_files_read(args), overwrite=args.overwrite,
                  resume=args.resume, checkpoint_minutes=args.checkpoint_every, form=form)
    if form.alpha is not None and not args.quiet:
        print(f"dip: {args.image.name} has an alpha channel: it is kept as it is on the outputs, not restored")
    tile = _tile_side(args.tile) if args.tile is not None else None
    client = _connect(args.scheduler, tile) if args.scheduler else None
    try:
        if tile is not None:
            result, _ = run_tiled_task(args.command, image, tile=tile, overlap=args.overlap, client=client,
                                       **common, **kwargs)
        else:
            result, _ = run_task(args.command, image, client=client, **common, **kwargs)
    finally:
        if client is not None:
            client.close()
    return INTERRUPTED if result.stopped else 0  # a partial result: scripts must see it did not finish


def _check_name(name) -> None:
    """--name is a file name stem: a path there would write the outputs outside -o."""
    if name is not None and (Path(name).name != name or name in ("", ".", "..")):
        raise DIPError(f"--name is the outputs' file name stem, not a path (got {name!r}); "
                       "-o chooses their folder.")


def _read_inputs(args, asked_axis):
    """The image (with its channel axis and file form), the mask and the reference, as the run takes them;
    what loading the mask changed is printed unless --quiet."""
    from ..io import read_input
    from ..masks import load_mask

    image, channel_axis, form = read_input(args.image, asked_axis)
    mask_notes = []
    mask_file = getattr(args, "mask", None)
    mask = load_mask(mask_file, args.mask_observed, mask_notes) if mask_file is not None else None
    if not args.quiet:
        for note in mask_notes:
            print(f"mask {args.mask.name}: {note}")
    reference = read_input(args.reference, asked_axis, "reference")[0] if args.reference else None
    return image, channel_axis, form, mask, reference


def _run_settings(args, task, channel_axis) -> dict:
    """The run's settings from the flags: overrides, --config or --preset (not both), the random mask
    and the task's own options."""
    kwargs = dict(channel_axis=channel_axis, keep_observed=args.keep_observed,
                  validate=args.validate, classical=None if args.classical == "none" else args.classical,
                  **_overrides(args))
    if args.budget is not None:
        kwargs["budget"] = args.budget
    if args.config:
        if args.preset:
            raise DIPError("give either --preset or --config, not both.")
        kwargs["config"] = RunConfig.load(args.config)
    elif args.preset:
        kwargs["preset"] = args.preset
    if task.mask == "random":
        kwargs.update(missing_fraction=args.fraction, mask_seed=args.mask_seed)
    for option in task.options:
        kwargs[option.name] = _option_value(option, getattr(args, option.name))
    return kwargs


def _files_read(args) -> tuple:
    """Every file the command reads (a PSF file too), so no output is ever written over one."""
    return (args.image, getattr(args, "mask", None), args.reference, args.config) + tuple(
        Path(v) for v in vars(args).values() if isinstance(v, str) and Path(v).is_file())


def _connect(scheduler: str, tile):
    """The Dask client of --scheduler, saying what runs there and where its dashboard is."""
    from ..batch import connect, dashboard

    client = connect(scheduler)
    link = dashboard(client)
    print(f"dip: the {'tiles' if tile else 'slices'} run on the Dask cluster at {scheduler}"
          + (f" (dashboard {link})" if link else ""), flush=True)
    return client
