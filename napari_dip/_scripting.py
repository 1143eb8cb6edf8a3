"""One call from the napari console: restore a layer and add the result layers (waiting, or not)."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

import src_core
from src_core import DIPError

from ._capture import capture, current_index
from ._driver import run_threads
from ._run import LayerRun


def _layer(viewer, layer, what: str):
    if layer is None or not isinstance(layer, str):
        return layer
    try:
        return viewer.layers[layer]
    except KeyError:
        names = [item.name for item in viewer.layers]
        raise DIPError(f"no {what} layer named {layer!r}; layers are {names}.") from None


def fitted_config(captured, spec, seconds: float, threads, measure: bool = True):
    """The captured run's configuration with the count that fits ``seconds`` per image here
    (a tiled run's tiles together), as :func:`src_core.prepare` fits it; ``measure=False``
    calibrates nothing (live healing fits each stroke's box on napari's main thread)."""
    shape = np.shape(captured.image)
    plane = tuple(shape[-3:-1] if captured.source.rgb else shape[-2:])
    tiled = captured.tile is not None
    return src_core.budget.fit_run(
        captured.config, spec, 3 if captured.source.rgb else 1, plane, budget_s=seconds,
        operator=spec.operator(**captured.task_options), threads=run_threads(threads),
        classical=None if tiled else "auto", measure=measure).config


def restore_layer(viewer, image, mask=None, *, task: str | None = None, reference=None,
                  label: int | None = None, slices: str = "all", preset: str | None = None,
                  missing_fraction: float = 0.5, mask_seed: int = 0, threads: int | None = None,
                  region: str = "whole", keep_observed: bool | None = None,
                  keep_earlier: bool = False, wait: bool = True, tile="auto", scheduler: str | None = None,
                  client=None, budget=None, extra_layers: bool = False, live: bool = False, **settings):
    """Restore ``image`` (a layer or its name) with Deep Image Prior and add the results.

    Takes the same options as the dock widget.  ``wait=True`` runs in the
    calling thread (the viewer waits) and returns the result layer;
    ``wait=False`` starts a worker thread, so napari stays usable, and returns
    the :class:`~napari_dip._run.LayerRun` at once: its progress shows in
    napari's Activity dock (Cancel there stops it and keeps the partial
    result), ``run.stop()`` does the same, ``run.worker.finished`` signals
    the end and ``run.result`` is then the result layer.

    ``mask``: a Labels layer whose painted pixels are the ones to fill
    (``label`` picks one label value; default every painted pixel).
    ``task``: "inpaint" (the default when a mask is given), "random" (drop
    ``missing_fraction`` of the pixels at random and restore them),
    "denoise", "sr" (with ``factor=4``: the result layer is larger, at
    ``scale / factor``) or "deconvolve" (with ``psf=`` a Gaussian sigma in
    pixels, or a 2D array or Image layer of the PSF).  ``reference``: optional clean image layer for the true PSNR.
    ``slices``: "all" or "current" (stacks).  ``preset``: one of
    ``src_core.preset_names()`` (default: the paper's setting for the task;
    "cpu" is small enough for a laptop); any engine setting can be overridden
    by name (``scales=4``, ``iterations=500``, ``lr=0.01``, ``device="cuda"``,
    ``snapshot_every=100``: how often the preview, and with ``extra_layers`` the stack, takes a frame).
    ``threads``: CPU threads (default: the free cores less one for napari).
    ``region="damage"``: restore only a box around the mask and paste it
    back; ``region="tiles"``: a large 2D image in overlapping tiles of ``tile``
    pixels ("auto": the largest the device takes).  With no preset and no
    ``iterations`` on a CPU, the count (and the cpu network's width) fits about
    2 minutes per image here, as in the API; ``budget`` ("10min", or seconds) gives
    another time.  ``client`` (a
    ``distributed.Client``) or ``scheduler`` (its address): the slices or
    tiles run on that Dask cluster and arrive as they finish.  ``keep_observed`` (default on,
    except for denoising): the result
    equals the input wherever it was observed.  ``keep_earlier``: keep the
    layers an earlier run of this image added (default: replace them).

    Adds the result layer (input dtype, scale, translate and axis labels; the
    curve numbers in ``layer.metadata["history"]``) and returns it;
    ``extra_layers=True`` adds the intermediate outputs as a stack layer (an
    iteration axis in front) and the PSNR curve as a picture layer too.  Raises ``src_core.DIPError`` with a
    clear message on bad input.

    ``live=True`` (inpainting a 2D image): heal as you paint instead of one run.  Each change
    to ``mask`` heals the box around it in a ``<image> DIP live`` layer (the classical fill at
    once, then DIP's previews; at most ``napari_dip._live.LIVE_BUDGET_S`` seconds a change
    with a time budget), in a worker thread; returns the
    :class:`~napari_dip._live.LiveHealing`, whose ``stop()`` ends it.

    ```pycon
    >>> import napari_dip                                   # doctest: +SKIP
    >>> result = napari_dip.restore_layer(viewer, "kate (text-corrupted)", "kate mask",
    ...                                   preset="cpu", iterations=300)
    >>> result.metadata["history"]["psnr"][-1]                # doctest: +SKIP

    ```
    """
    image = _layer(viewer, image, "image")
    mask = _layer(viewer, mask, "mask")
    reference = _layer(viewer, reference, "reference")
    if task is None:
        if mask is None:
            raise DIPError(f"give task='inpaint' with a mask, or another task: one of {src_core.TASKS}.")
        task = "inpaint"
    spec = src_core.get_task(task)
    task_options = src_core.tasks.take_options(spec, settings)
    option_layers = {}  # an Image layer may stand for an option (a bead's PSF): named in the result
    for option in spec.options:
        if option.image and isinstance(task_options.get(option.name), Layer):
            option_layers[option.name] = (str(task_options[option.name].name), None)
            task_options[option.name] = task_options[option.name].data
    spec.operator(**task_options)  # checks the options before any copy of the layers
    if slices not in ("all", "current"):
        raise DIPError(f"slices must be 'all' or 'current' (got {slices!r}).")
    config = src_core.make_config(task, preset, task_options=task_options, **settings)
    seconds = src_core.budget.requested_seconds(budget, settings, preset is None, config.preset)
    if live:
        return _start_live(viewer, image, mask, reference, task, label, config, seconds, threads,
                           keep_observed, task_options)
    slice_index = None
    if slices == "current" and image is not None and image.ndim > 2:
        slice_index = current_index(viewer, image)
    captured = capture(image, mask, reference, task=task, label=label, config=config,
                       slice_index=slice_index, missing_fraction=missing_fraction,
                       mask_seed=mask_seed, threads=threads, region=region,
                       keep_observed=keep_observed, task_options=task_options, tile=tile,
                       scheduler=scheduler, client=client, option_layers=option_layers)
    if seconds is not None:
        captured.config = fitted_config(captured, spec, seconds, threads)
    run = LayerRun(viewer, captured, live=not wait, keep_earlier=keep_earlier, extra_layers=extra_layers)
    run.prepare()  # the engine's refusal raises here, in the caller's console
    if not wait:
        run.start(threaded=True)
        return run
    run.start(threaded=False)
    if run.outcome.error is not None:
        raise run.outcome.error
    if run.finish_error is not None:
        raise run.finish_error
    return run.result


def _start_live(viewer, image, mask, reference, task, label, config, seconds, threads, keep_observed, task_options):
    """restore_layer(live=True): live healing with these settings (see napari_dip._live)."""
    from ._live import live_config, start_live

    spec = src_core.get_task(task)
    if spec.mask != "required":
        raise DIPError(f"live healing fills a painted mask: use task='inpaint' (got {task!r}).")

    def capture_around(changed):
        captured = capture(image, mask, reference, task=task, label=label, config=config, threads=threads,
                           region="damage", around=changed, keep_observed=keep_observed,
                           task_options=task_options)
        if seconds is not None:
            captured.config = live_config(captured, seconds, threads)
        return captured

    return start_live(viewer, image, mask, capture_around)
