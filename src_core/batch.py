"""Many images, one restoration each, on Dask distributed: :func:`restore_many` and ``dip batch``.

Each image is one Dask task that reads its files, restores (``src_core.restore``) and writes
its answer and history atomically on the worker, so a finished item is kept whatever happens
to the others.  A rerun with the same output folder skips the items whose history holds the
same fingerprint (the input files' bytes and the settings); an item that fails (a bad file,
out of memory) is reported with its reason and does not stop the rest; an item whose worker
dies is run again by the scheduler.  With no client a ``LocalCluster`` sized to the machine
is started (one worker per GPU, or single-threaded workers on the CPU's free cores).
"""

from __future__ import annotations

import glob
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DIPError
from .io import is_zarr

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".npy", ".bmp")


@dataclass(frozen=True)
class Item:
    """One image to restore: where it is, its mask and clean reference files (if any), and its
    output name.

    ``page``: for a multi-page TIFF or a Zarr array, the plane this item restores (read
    alone, on the worker: a 200-frame stack is never loaded to restore one frame).
    """

    name: str
    image: Path
    mask: Path | None = None
    page: int | None = None
    reference: Path | None = None


def _zarr_array(path: Path):
    """The array of a Zarr store: the store itself, or an OME-Zarr group's full-resolution level."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node
    multiscales = _multiscales(node)
    if not multiscales:
        raise DIPError(f"{path} is a Zarr group without OME-Zarr multiscales; give the array itself "
                       f"(one of {sorted(node.array_keys())}).")
    return node[multiscales[0]["datasets"][0]["path"]]


def _multiscales(group) -> list | None:
    """OME-Zarr's multiscales list (NGFF 0.4 keeps it at the top of the attributes, 0.5 under "ome")."""
    return group.attrs.get("multiscales") or group.attrs.get("ome", {}).get("multiscales")


def _zarr_planes(path: Path) -> int:
    a = _zarr_array(path)
    if a.ndim < 3:
        return 1
    rgb = a.shape[-1] in (3, 4) and a.ndim >= 3 and a.shape[-3] > 4
    lead = a.shape[:-3] if rgb else a.shape[:-2]
    return int(np.prod(lead)) if lead else 1


def _pages(path: Path) -> int:
    """How many 2D planes a TIFF file holds as separate pages (1 for anything else)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return 1
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except Exception:  # not a readable TIFF: its item fails with the reader's message
        return 1


def read_item(item: Item):
    """The item's image: a whole file, one page of a TIFF stack, or one plane of a Zarr array."""
    from .io import read_image

    if is_zarr(item.image):
        a = _zarr_array(item.image)
        lead = a.shape[:-3] if (a.shape[-1] in (3, 4) and a.shape[-3] > 4) else a.shape[:-2]
        return np.asarray(a[np.unravel_index(item.page or 0, lead)] if lead else a[...])
    if item.page is None:
        return read_image(item.image)
    import tifffile

    return tifffile.imread(item.image, key=item.page)


@dataclass
class BatchSummary:
    done: list = field(default_factory=list)      # per item: name, outputs, seconds, PSNR if known
    skipped: list = field(default_factory=list)   # names finished by an earlier call
    failed: list = field(default_factory=list)    # per item: name, error
    seconds: float = 0.0
    workers: int = 0
    dashboard: str | None = None
    stacks: list = field(default_factory=list)    # TIFF stacks written back whole


def not_images(sources) -> list[str]:
    """What :func:`collect` passes over in the folders among ``sources``: files that are not
    images by their suffix, and sub-folders (it does not descend)."""
    left = []
    for source in [sources] if isinstance(sources, (str, Path)) else list(sources):
        folder = Path(source)
        if folder.is_dir() and not is_zarr(folder):
            left += sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                           if not is_zarr(p) and not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
    return left


def collect(sources, mask=None, mask_pattern: str | None = None,
            reference_pattern: str | None = None) -> list[Item]:
    """The items of files, folders (their images) and glob patterns, in a stable order.

    ``mask``: one mask file for every image; ``mask_pattern``: each image's own mask, a
    name in the image's folder with ``{stem}`` standing for the image's name (e.g.
    ``"{stem}_mask.png"``); ``reference_pattern``: each image's clean version, named the
    same way (its PSNR goes in the history).  Masks and references are not images to
    restore; an image without its mask or reference is an error that lists them.
    """
    if mask is not None and mask_pattern is not None:
        raise DIPError("give one mask for all (mask) or a name pattern (mask_pattern), not both.")
    for what, pattern in (("mask_pattern", mask_pattern), ("reference_pattern", reference_pattern)):
        if pattern is not None and "{stem}" not in pattern:
            raise DIPError(f"{what} must contain {{stem}} (got {pattern!r}), e.g. "
                           f"'{{stem}}_{what.split('_')[0]}.png'.")
    paths: list[Path] = []
    for source in [sources] if isinstance(sources, (str, Path)) else list(sources):
        source = str(source)
        if is_zarr(Path(source)):
            paths.append(Path(source))
        elif Path(source).is_dir():
            paths += sorted(p for p in Path(source).iterdir()
                            if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or is_zarr(p))
        elif any(ch in source for ch in "*?["):
            paths += sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
        elif Path(source).is_file():
            paths.append(Path(source))
        else:
            raise DIPError(f"{source!r} is not a file, a folder or a glob pattern that matches anything.")
    patterns = [p for p in (mask_pattern, reference_pattern) if p is not None]
    companions = {(p.parent / pattern.format(stem=p.stem)).resolve() for p in paths for pattern in patterns}
    paths = [p for p in paths if p.resolve() not in companions]
    if not paths:
        raise DIPError(f"no image found in {sources!r} (looked for {', '.join(IMAGE_SUFFIXES)} files and "
                       "Zarr stores).")

    def own(p: Path, pattern: str | None) -> Path | None:
        return None if pattern is None else p.parent / pattern.format(stem=p.stem)

    items, unpaired, names = [], [], {}
    for p in dict.fromkeys(paths):
        m = Path(mask) if mask is not None else own(p, mask_pattern)
        r = own(p, reference_pattern)
        missing = [f.name for f in (m, r) if f is not None and not f.is_file()]
        if missing:
            unpaired.append(f"{p.name} (no {' nor '.join(missing)})")
            continue
        name = p.stem if p.stem not in names else f"{p.stem}_{len(names)}"
        names[name] = p
        pages = _zarr_planes(p) if is_zarr(p) else _pages(p)
        if pages == 1 and not is_zarr(p):
            items.append(Item(name, p, m, reference=r))
        else:  # a stack: one item a page, written back as one stack (write_stacks)
            items += [Item(f"{name}_p{k:05d}", p, m, k, r) for k in range(pages)]
    if unpaired:
        raise DIPError(f"{len(unpaired)} image(s) lack a file they need: "
                       f"{', '.join(unpaired[:10])}{' ...' if len(unpaired) > 10 else ''}.")
    return items


def _fingerprint(item: Item, settings: dict) -> str:
    h = hashlib.sha256()
    if is_zarr(item.image):  # one plane's values, not the whole store
        h.update(np.ascontiguousarray(read_item(item)).tobytes())
    else:
        h.update(Path(item.image).read_bytes())
    for companion in (item.mask, item.reference):
        if companion is not None:
            h.update(Path(companion).read_bytes())
    h.update(str(item.page).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _outputs(item: Item, output_dir: Path) -> dict:
    suffix = item.image.suffix.lower() if item.image.suffix.lower() in (".png", ".tif", ".tiff", ".npy") else ".png"
    if is_zarr(item.image):
        suffix = ".tif"  # a plane; the stack goes back as Zarr (write_stacks)
    return {"restored": output_dir / f"{item.name}_restored{suffix}",
            "history": output_dir / f"{item.name}_history.json"}


def _earlier_fingerprint(item: Item, output_dir: Path) -> str | None:
    """The fingerprint an earlier call finished this item's outputs under (None: not finished)."""
    paths = _outputs(item, output_dir)
    if not (paths["restored"].is_file() and paths["history"].is_file()):
        return None
    try:
        return json.loads(paths["history"].read_text()).get("batch_fingerprint")
    except (OSError, ValueError):
        return None


def read_pair(item: Item, channel_axis="auto"):
    """The item's image and reference as :func:`src_core.restore` takes them, with where their
    channels are and the :class:`src_core.io.FileForm` the outputs take (a stack's plane has
    none: the stack is written back whole, see :func:`write_stacks`)."""
    from .io import FileForm, read_input

    if item.page is None and not is_zarr(item.image):
        image, axis, form = read_input(item.image, channel_axis)
        reference = None if item.reference is None else read_input(item.reference, channel_axis, "reference")[0]
        return image, reference, axis, form
    reference = None if item.reference is None else read_item(Item(item.name, item.reference, page=item.page))
    return read_item(item), reference, channel_axis, FileForm()


def run_item(item: Item, settings: dict, output_dir: str, fingerprint: str) -> dict:
    """Restore one item and write its outputs (on a worker); a failure is returned, not raised."""
    from .api import restore, restore_tiled
    from .io import json_default, write_text
    from .masks import load_mask

    t0 = time.perf_counter()
    try:
        settings = dict(settings)
        observed = settings.pop("mask_observed", "white")
        image, reference, channel_axis, form = read_pair(item, settings.pop("channel_axis", "auto"))
        mask = load_mask(item.mask, observed) if item.mask is not None else None
        result = (restore_tiled if "tile" in settings else restore)(image, mask, reference=reference,
                                                                    channel_axis=channel_axis, **settings)
        paths = _outputs(item, Path(output_dir))
        form.write(paths["restored"], result.image)
        record = dict(result.to_dict(), batch_fingerprint=fingerprint, image=str(item.image),
                      mask=None if item.mask is None else str(item.mask),
                      reference=None if item.reference is None else str(item.reference))
        write_text(paths["history"], json.dumps(record, indent=1, default=json_default))  # last: marks it done
        return {"name": item.name, "seconds": time.perf_counter() - t0, "psnr": result.history.final_psnr,
                "outputs": {k: str(v) for k, v in paths.items()}}
    except Exception as exc:  # reported in the summary; the other items go on
        return {"name": item.name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def _local_cluster(workers: int | None):
    from distributed import Client, LocalCluster

    import torch

    from .speed import usable_cores

    gpus = torch.cuda.device_count()
    n = workers or (gpus if gpus else max(1, usable_cores()))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
    return Client(cluster), cluster


def connect(scheduler: str):
    """A client of the scheduler at ``scheduler``, or a DIPError that says how to start one."""
    from distributed import Client

    try:
        return Client(scheduler, timeout="5s")
    except (OSError, TimeoutError) as exc:
        raise DIPError(f"cannot reach the Dask scheduler at {scheduler!r} ({type(exc).__name__}); start one "
                       "with `dask scheduler` and workers with `dask worker <address>`, or leave the scheduler "
                       "out to run on a local cluster.") from None


def dashboard(client) -> str | None:
    """The link to the cluster's dashboard, or None when its scheduler runs without one."""
    if "dashboard" not in client.scheduler_info().get("services", {}):
        return None
    return client.dashboard_link


def restore_many(items, output_dir, *, client=None, workers: int | None = None, callback=None,
                 overwrite: bool = False, **settings) -> BatchSummary:
    """Restore every item (from :func:`collect`) into ``output_dir``, on ``client`` or a local cluster.

    ``settings`` are :func:`src_core.restore`'s keyword arguments (task, preset, overrides...),
    or with ``tile`` :func:`src_core.restore_tiled`'s (each image in tiles on its worker), and
    ``mask_observed`` (what the mask files' white means: ``"white"`` = observed, or ``"black"``,
    as :func:`src_core.load_mask`); they are checked once before anything is submitted.
    ``callback(summary_entry)`` sees each finished item.  Items finished by an earlier call with the
    same settings and inputs are
    skipped; ones finished with others are refused unless ``overwrite``.  Returns the
    :class:`BatchSummary` (also written as ``batch_summary.json``).
    """
    from .io import check_writable, json_default, write_text

    items = list(items)
    output_dir = Path(output_dir)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DIPError(f"workers must be a whole number >= 1 (got {workers!r}); leave it out for one a core.")
    settings = {"threads": 1, **settings}  # one thread a worker: workers, not threads, use the cores
    _check_batch(items, output_dir, settings)
    check_writable(output_dir)
    summary = BatchSummary()
    pending = _pending(items, output_dir, settings, summary, overwrite)
    t0 = time.perf_counter()
    if pending:
        _run_pending(pending, settings, output_dir, client, workers, callback, summary)
    summary.seconds = time.perf_counter() - t0
    summary.stacks = write_stacks(items, output_dir)
    write_text(output_dir / "batch_summary.json",
               json.dumps(summary.__dict__, indent=1, default=json_default))
    return summary


def _check_batch(items, output_dir: Path, settings: dict) -> None:
    """Every setting and every item checked once, before anything is submitted."""
    from .api import make_config
    from .tasks import get_task, take_options

    if settings.get("mask_observed", "white") not in ("white", "black"):
        raise DIPError(f"mask_observed must be 'white' or 'black' (got {settings['mask_observed']!r}).")
    for item in items:
        if output_dir.resolve() == item.image.parent.resolve():
            raise DIPError(f"the output folder {output_dir} is the input folder of {item.image.name}; choose "
                           "another one, so no input can be written over.")
    spec = get_task(settings.get("task") or "inpaint")
    if spec.mask == "required" and any(item.mask is None for item in items):
        raise DIPError(f"task {spec.name!r} needs a mask for every image: one for all (--mask) or each "
                       "image's own by name (--mask-pattern '{stem}_mask.png').")
    probe = dict(settings)
    options = take_options(spec, probe)
    config = make_config(spec.name, probe.pop("preset", None), probe.pop("config", None), options,
                         **{k: v for k, v in probe.items() if k not in _RESTORE_ONLY})  # bad settings fail here
    if settings.get("tile", "auto") != "auto":
        from .tiles import settle_overlap

        settle_overlap(settings["tile"], settings.get("overlap"), config.network, int(options.get("factor", 1)))


def _pending(items, output_dir: Path, settings: dict, summary: BatchSummary, overwrite: bool) -> list:
    """(item, fingerprint) of the items to run; those finished with these settings are skipped,
    those finished with others refused unless ``overwrite``."""
    pending = []
    other = []  # finished earlier, with other settings or inputs
    for item in items:
        fp, earlier = _fingerprint(item, settings), _earlier_fingerprint(item, output_dir)
        (summary.skipped.append(item.name) if earlier == fp else pending.append((item, fp)))
        if earlier not in (None, fp):
            other.append(item.name)
    if other and not overwrite:
        raise DIPError(f"{len(other)} image(s) have results in {output_dir} from other settings or inputs "
                       f"({', '.join(other[:5])}{' ...' if len(other) > 5 else ''}); pass overwrite=True "
                       "(--overwrite) to replace them, or choose another output folder.")
    return pending


def _run_pending(pending, settings: dict, output_dir: Path, client, workers, callback, summary: BatchSummary):
    """Submit the items (to ``client``, or a local cluster made for them) and gather their entries."""
    from distributed import as_completed

    own = None
    if client is None:
        client, own = _local_cluster(workers)
    summary.workers = len(client.scheduler_info().get("workers", {}))
    summary.dashboard = dashboard(client)
    try:
        futures = [client.submit(run_item, item, settings, str(output_dir), fp, pure=False, retries=1,
                                 key=f"dip-{item.name}-{fp}") for item, fp in pending]
        for future in as_completed(futures):
            entry = future.result()
            (summary.failed if "error" in entry else summary.done).append(entry)
            if callback is not None:
                callback(entry)
    finally:
        if own is not None:
            client.close()
            own.close()


def write_stacks(items, output_dir: Path) -> list[str]:
    """Put each stack whose planes all finished back together: a TIFF as ``<stem>_restored.tif``
    (the input's dtype, series shape and axes, pixel size, ImageJ or OME metadata), a Zarr
    array or OME-Zarr group as ``<stem>_restored.zarr`` (see :func:`_write_zarr`)."""
    written = []
    by_file: dict[Path, list[Item]] = {}
    for item in items:
        if item.page is not None:
            by_file.setdefault(item.image, []).append(item)
    for path, pages in by_file.items():
        outputs = [_outputs(item, output_dir)["restored"] for item in sorted(pages, key=lambda i: i.page)]
        if not all(p.is_file() for p in outputs):
            continue  # some page failed: its own output is missing, and the stack is not written
        write = _write_zarr if is_zarr(path) else _write_tiff
        written.append(write(path, outputs, output_dir))
    return written


def _write_tiff(path: Path, planes: list[Path], output_dir: Path) -> str:
    import tifffile

    from .io import atomic_path, tiff_metadata

    stack = np.stack([tifffile.imread(p) for p in planes])
    with tifffile.TiffFile(path) as tif:
        first, series, ome = tif.pages[0], tif.series[0], tif.is_ome
        factor = stack.shape[1] / first.shape[0]  # super-resolution: pixels that many times smaller
        kwargs = tiff_metadata(tif, factor, stack.dtype)
    shape = [int(round(n * factor)) if axis in "YX" else n for axis, n in zip(series.axes, series.shape)]
    if int(np.prod(shape)) == stack.size:
        stack = stack.reshape(shape)  # the input's axes (T, Z, ...), not a flat list of pages
    elif "description" in kwargs:  # pages that do not make the input's series: written as pages
        kwargs = {k: v for k, v in kwargs.items() if k not in ("description", "metadata", "ome", "photometric")}
    elif kwargs.get("metadata"):
        kwargs["metadata"].pop("axes")
    target = output_dir / f"{path.stem.removesuffix('.ome')}_restored{'.ome' if ome else ''}.tif"
    with atomic_path(target) as tmp:
        tifffile.imwrite(tmp, stack, **kwargs)
    return str(target)


def _write_zarr(path: Path, planes: list[Path], output_dir: Path) -> str:
    """The restored planes as ``<stem>_restored.zarr``, written plane by plane into a temporary
    store renamed at the end: the input array's shape (Y and X larger after super-resolution),
    dtype, chunks, attributes and Zarr format; for an OME-Zarr group, a group with its
    attributes, the restored full-resolution level, and each lower level made anew from it
    (anti-aliased resizing to that level's shape, as much larger), its pixel sizes
    (``coordinateTransformations`` scales of y and x) divided by the factor."""
    import shutil

    import tifffile
    import zarr

    source = _zarr_array(path)
    target = output_dir / f"{path.stem}_restored.zarr"
    tmp = output_dir / f".{path.stem}_restored.zarr.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    node = zarr.open(str(path), mode="r")
    rgb = source.shape[-1] in (3, 4) and source.shape[-3] > 4
    lead = source.shape[:-3] if rgb else source.shape[:-2]
    yx = (source.ndim - 3, source.ndim - 2) if rgb else (source.ndim - 2, source.ndim - 1)
    factor = tifffile.imread(planes[0]).shape[0] / source.shape[yx[0]]  # a plane file is (Y, X[, C])

    def larger(shape):  # an input shape at the answer's pixel size
        return tuple(int(round(n * factor)) if axis in yx else n for axis, n in enumerate(shape))

    fmt = _zarr_format(node)
    levels = []  # (path in the group, input array) of the lower OME-Zarr levels
    if isinstance(node, zarr.Array):
        out = _new_zarr_array(str(tmp), None, larger(source.shape), source.chunks, source.dtype, fmt)
    else:
        group = zarr.open_group(str(tmp), mode="w", **({} if fmt is None else {"zarr_format": fmt}))
        group.attrs.update(_scaled_multiscales(dict(node.attrs), factor, yx))
        datasets = _multiscales(node)[0]["datasets"]
        out = _new_zarr_array(group, datasets[0]["path"], larger(source.shape), source.chunks, source.dtype)
        levels = [(d["path"], node[d["path"]]) for d in datasets[1:]]
    out.attrs.update(dict(source.attrs))
    for k, plane in enumerate(planes):
        out[np.unravel_index(k, lead) if lead else ...] = tifffile.imread(plane)
    for level_path, level in levels:
        _downsampled_level(out, _new_zarr_array(group, level_path, larger(level.shape), level.chunks, level.dtype),
                           len(lead))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return str(target)


def _zarr_format(node) -> int | None:
    """The Zarr format (2 or 3) of an open array or group, where the library says (zarr 3)."""
    metadata = getattr(node, "metadata", None)
    return getattr(metadata, "zarr_format", None)


def _new_zarr_array(where, name, shape, chunks, dtype, zarr_format=None):
    """A new array at the store path ``where`` (``name`` None) or in the group ``where``, with
    zarr 3's API or zarr 2's (the newest zarr for Python 3.10)."""
    import zarr

    if name is None:
        extra = {} if zarr_format is None else {"zarr_format": zarr_format}
        return zarr.open_array(where, mode="w", shape=shape, chunks=chunks, dtype=dtype, **extra)
    make = getattr(where, "create_array", None) or where.create_dataset
    return make(name, shape=shape, chunks=chunks, dtype=dtype)


def _scaled_multiscales(attrs: dict, factor: float, yx: tuple) -> dict:
    """OME-Zarr attributes with every level's y and x scale divided by ``factor`` (pixels that
    many times smaller after super-resolution); unchanged for 1."""
    import copy

    if factor == 1:
        return attrs
    attrs = copy.deepcopy(attrs)
    for multiscale in attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales") or []:
        names = [a.get("name") if isinstance(a, dict) else a for a in multiscale.get("axes", [])]
        axes = [names.index(n) for n in ("y", "x")] if {"y", "x"} <= set(names) else list(yx)
        for dataset in multiscale.get("datasets", []):
            for transform in dataset.get("coordinateTransformations", []):
                if transform.get("type") == "scale":
                    transform["scale"] = [v / factor if i in axes else v for i, v in enumerate(transform["scale"])]
    return attrs


def _downsampled_level(full, level, lead: int) -> None:
    """Fill an OME-Zarr level from the full-resolution array: plane by plane when the stack axes
    keep their length (the usual pyramid of Y and X), else the whole array at once."""
    from skimage.transform import resize

    def shrink(a, shape):
        small = resize(a, shape, order=1, preserve_range=True, anti_aliasing=True)
        return (np.rint(small) if np.dtype(level.dtype).kind in "iu" else small).astype(level.dtype)

    if full.shape[:lead] == level.shape[:lead]:
        for index in np.ndindex(*full.shape[:lead]):
            level[index] = shrink(np.asarray(full[index]), level.shape[lead:])
    else:
        level[...] = shrink(np.asarray(full[...]), level.shape)


#: restore() arguments that are not configuration settings
_RESTORE_ONLY = {"task", "missing_fraction", "mask_seed", "channel_axis", "keep_observed", "validate",
                 "mask_observed", "classical", "threads", "reference", "checkpoint_dir", "checkpoint_every_s",
                 "operator", "tile", "overlap"}
