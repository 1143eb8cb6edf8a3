"""The public API: restore an image in the user's own form, or step through a run.

Tasks (mask convention: True / 1 = observed, False / 0 = missing):

* ``"inpaint"``: fill the missing pixels of ``mask``;
* ``"random"``: drop a random ``missing_fraction`` of the pixels of a clean
  image (Bernoulli mask, ``mask_seed``) and restore them; the input itself is
  the reference for PSNR (the paper's Table 1 protocol);
* ``"denoise"``: every pixel observed; the answer is the exponential moving
  average of outputs (0.99 unless the configuration sets another).

Non-finite pixels (NaN, inf) in the image are treated as missing, with a
warning, and recorded in the history's notes.

The answer is worth having at every budget (docs/results/quality): with no
preset, the preset fits the device (the paper's GPU-sized settings would
take hours on a CPU); observed pixels are kept; a few observed pixels are
held out of the fit to measure quality without ground truth, which picks the
best iterate and blends DIP with the instant classical answer (biharmonic
for inpainting, non-local means for denoising, Richardson-Lucy for
deconvolution, judged through the blur) by the weight that fits the held-out
pixels best.  For denoising the held-out pixels are noisy, but their
noise is independent of both estimates there (neither method saw them), so
their squared error is the true one plus the noise variance: the same choice.  ``validate=0,
classical=None, keep_observed=False`` is the paper's raw protocol.
"""

from __future__ import annotations

import numpy as np

from .config import RunConfig
from .engine import DIPRun, History
from .errors import DIPError
from .imaging import LazySlices, is_lazy
from .operators import Operator
from .parts import PartStore, _ranges
from .preparation import DEFAULT_VALIDATE, MIN_HELD_OUT, fidelity_for, make_config, prepare
from .problem import Problem, RestoreResult, blend_weight, cut_short
from .tiled import TiledProblem, restore_tiled

__all__ = ["DEFAULT_VALIDATE", "MIN_HELD_OUT", "Problem", "RestoreResult", "TiledProblem", "blend_weight",
           "fidelity_for", "iterate", "make_config", "prepare", "restore", "restore_problem", "restore_tiled"]


def iterate(image, mask=None, **kwargs) -> DIPRun:
    """Step-by-step control of one 2D image: a DIPRun whose events you iterate.

    Takes the same arguments as :func:`restore`.  Events carry (C, H, W) float
    outputs in [0, 1]; ``finished.output`` converts back with
    ``problem.to_user``.  For stacks use :func:`prepare` and ``problem.run(i)``.

    ```pycon
    >>> import numpy as np, src_core
    >>> img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> run = src_core.iterate(img, task="random", preset="cpu", scales=2, iterations=6,
    ...                        report_every=3)
    >>> [(e.kind, getattr(e, "iteration", None)) for e in run][:2]
    [('progress', 3), ('progress', 6)]

    ```
    """
    problem = prepare(image, mask, **kwargs)
    if problem.slices != 1:
        raise DIPError(f"iterate() takes one 2D image; this one is a stack of {problem.slices} "
                       "slices. Use restore(), or prepare() and problem.run(i) per slice.")
    run = problem.run(0)
    run.problem = problem
    return run


def restore(image, mask=None, *, task: str | None = None, reference=None, missing_fraction: float = 0.5,
            mask_seed: int = 0, channel_axis="auto", preset: str | None = None,
            config: RunConfig | None = None, keep_observed: bool | None = None,
            validate: float | None = None, classical: str | None = "auto", callback=None,
            stop=None, threads=None, checkpoint_dir=None, checkpoint_every_s: float = 300.0,
            operator: Operator | None = None, client=None, budget=None, stack: str | None = None, spacing=None,
            **overrides) -> RestoreResult:
    """Restore an image with Deep Image Prior; returns the result and its history.

    ``image``: (Y, X), (Y, X, C) or a stack (Z/T, Y, X[, C]); uint8, uint16 or
    float.  The result has the input's shape, dtype and value range.  ``mask``:
    True/1 = observed.  ``preset``: one of ``src_core.preset_names()``
    (default: one that fits the device: ``cpu`` on a CPU, the paper's setting
    for the task on a GPU); any RunConfig or NetworkConfig field can be
    overridden by keyword.  With no preset and no ``iterations`` on a CPU, the run fits about
    2 minutes per image here (``budget``, e.g. "10min", to give it more; ``iterations=N``
    for exactly N).  ``task`` options (``factor``, ``psf``), ``operator``, ``budget``,
    ``keep_observed``, ``validate``, ``classical``, ``threads``, ``stack`` ("z": a z-stack, whose
    classical answer is 3D) and ``spacing``: see :func:`prepare`.
    ``callback(event, slice_index)`` sees every event.
    ``stop`` (a ``threading.Event``): once set, the current slice finishes
    after its current iteration with its partial answer, later slices are
    not run (they keep the input), and ``result.stopped`` is True.
    ``checkpoint_dir``: long work survives a crash, a kill or a stop: each
    finished slice is kept there, and the running one saves its state every
    ``checkpoint_every_s`` seconds; calling again with the same folder skips
    the finished slices and resumes the interrupted one where it was (a
    checkpoint made for other data or settings is refused).  When a slice
    after the first fails, the DIPError raised has the finished slices in
    its ``partial`` result.  ``client`` (a ``distributed.Client``): a stack's
    slices run there at once, one task each (``callback`` then sees no events;
    ``checkpoint_dir`` must be a folder the workers can reach).

    ```pycon
    >>> import numpy as np, src_core
    >>> img = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    >>> result = src_core.restore(img, task="random", preset="cpu", scales=2, iterations=10)
    >>> result.image.dtype, result.image.shape, len(result.history.loss)
    (dtype('uint8'), (32, 32), 10)

    ```
    """
    problem = prepare(image, mask, task=task, reference=reference, missing_fraction=missing_fraction,
                      mask_seed=mask_seed, channel_axis=channel_axis, preset=preset, config=config,
                      keep_observed=keep_observed, validate=validate, classical=classical,
                      threads=threads, operator=operator, budget=budget, stack=stack, spacing=spacing, **overrides)
    return restore_problem(problem, image, callback=callback, stop=stop, checkpoint_dir=checkpoint_dir,
                           checkpoint_every_s=checkpoint_every_s, client=client)


def restore_problem(problem: Problem, image, *, callback=None, stop=None, checkpoint_dir=None,
                    checkpoint_every_s: float = 300.0, client=None) -> RestoreResult:
    """Run a prepared problem slice by slice (what :func:`restore` does after :func:`prepare`).

    ``image`` is the user's input, which slices that were not run are given
    back as; the other arguments are :func:`restore`'s.
    """
    outputs = np.empty((problem.slices, *problem.operator.output_shape(problem.images.shape[1:])),
                       dtype=np.float32)
    histories: dict[int, History] = {}
    spreads: dict[int, np.ndarray] = {}  # with restarts: slice -> their spread (C, H, W)
    store = (PartStore(checkpoint_dir, problem.fingerprint(), checkpoint_every_s)
             if checkpoint_dir is not None else None)

    def result() -> RestoreResult:
        missing = [i for i in range(problem.slices) if i not in histories]
        source = None  # slices not run keep the input, unmasked (read one by one: it may be a lazy stack)
        if missing and problem.operator.factor == 1:
            source = (LazySlices.of(image, problem.layout, problem.scaling) if is_lazy(image)
                      else problem.layout.to_nchw(problem.scaling.to_unit(np.asarray(image))))
        for i in missing:
            outputs[i] = problem.placeholder(i) if source is None else source[i]
        classical_images = None
        if problem.classical is not None:
            classical_images = problem.to_user(np.stack([problem.classical_answer(i)[0]
                                                         for i in range(problem.slices)]))
        ordered = [histories[i] for i in sorted(histories)]
        stopped = bool(missing) or any(cut_short(h, problem.config) for h in ordered)
        spread = problem.stacked_spread(spreads)
        if spread is not None:
            spread = problem.spread_to_user(spread)
        return RestoreResult(problem.to_user(outputs), problem.corrupted(), problem.masks, ordered,
                             problem.config, problem.task, problem.notes, classical_images,
                             problem.keep_observed, problem.validate, stopped, spread)

    try:
        for kind, index, payload in problem.solve(stop=stop, store=store, client=client):
            if kind == "stopped":
                return result()
            if kind == "event" and callback is not None:
                callback(payload, index)
            elif kind in ("answer", "loaded"):
                outputs[index] = payload.answer
                histories[index] = payload.history
                if payload.spread is not None:
                    spreads[index] = payload.spread
    except Exception as exc:
        if not histories:
            raise
        done = sorted(histories)
        failed = getattr(exc, "part_index", None)
        which = "a slice" if failed is None else f"slice {failed} of {problem.slices}"
        error = DIPError(f"{which} failed ({type(exc).__name__}: {str(exc)[:300]}); slices "
                         f"{_ranges(done)} finished and are kept in this error's .partial result")
        problem.notes.append(f"{which} failed: {str(exc)[:300]}")
        error.partial = result()
        raise error from exc
    return result()
