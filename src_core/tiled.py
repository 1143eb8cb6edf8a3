"""One large 2D image restored in overlapping tiles (:mod:`src_core.tiles` plans them)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .config import RunConfig
from .devices import resolve_device
from .engine import psnr_ssim
from .errors import DIPError
from .operators import Operator, volume_blurs
from .parts import PartStore, solve_parts
from .preparation import task_for, prepare
from .problem import Problem, RestoreResult, cut_short, enlarge
from . import timing


def restore_tiled(image, mask=None, *, tile="auto", overlap: int | None = None, task: str | None = None,
                  reference=None, callback=None, stop=None, channel_axis="auto", preset: str | None = None,
                  config: RunConfig | None = None, keep_observed: bool | None = None,
                  validate: float | None = None, classical: str | None = "auto", threads=None,
                  operator: Operator | None = None, client=None, checkpoint_dir=None,
                  checkpoint_every_s: float = 300.0, **overrides) -> RestoreResult:
    """Restore a large 2D image, or each slice of a stack, in overlapping tiles
    (:mod:`src_core.tiles`), blended back.

    Takes :func:`restore`'s arguments, plus ``tile`` (the side in pixels, or
    "auto": the largest that fits in half the device's free memory) and
    ``overlap`` (default: a quarter of the tile, at most the network's
    context).  For inpainting only the tiles with missing pixels run; the
    others keep the input.  A stack's slices are tiled alike, each on its own
    (tile ``i`` of slice ``s`` is part ``s * tiles_per_slice + i``).
    ``callback(event, part_index)`` sees every event of a tile run here.
    ``client``: the tiles run there at once, one task each.  ``checkpoint_dir``:
    finished tiles are kept there and skipped by a later call with the same folder.
    ``result.histories`` holds one history per tile that ran, and the notes say which
    tiles those were.
    """
    tiled = TiledProblem.prepare(image, mask, tile=tile, overlap=overlap, task=task, reference=reference,
                                 channel_axis=channel_axis, preset=preset, config=config,
                                 keep_observed=keep_observed, validate=validate, classical=classical,
                                 threads=threads, operator=operator, **overrides)
    return tiled.restore(callback=callback, stop=stop, client=client, checkpoint_dir=checkpoint_dir,
                         checkpoint_every_s=checkpoint_every_s)


@dataclass
class TiledProblem:
    """A large 2D image (or each slice of a stack) as overlapping tiles: one-slice problems
    (``parts``) for the tiles that run, and the blend of their answers with the input of the
    others. A part's index is ``slice * len(tiles) + tile``."""

    whole: Problem                    # the whole image or stack (checked and converted, never run)
    tile: int
    overlap: int
    tiles: list                       # (rows, columns, blending weight) of every tile of a slice
    parts: list                       # (part index, one-slice Problem) of the tiles that run
    answers: dict = field(default_factory=dict)   # part index -> its PartAnswer
    stopped: bool = False

    @classmethod
    def prepare(cls, image, mask=None, *, tile="auto", overlap=None, task=None, validate=None,
                classical="auto", threads=None, operator=None, **settings) -> "TiledProblem":
        """Check everything (the whole image and every tile that runs) before any work."""
        from .tiles import choose_tile, plan, scaled, settle_overlap, tiles_to_run

        whole = prepare(image, mask, task=task, validate=0, classical=None, threads=threads,
                        operator=operator, **settings)
        cfg, op, f = whole.config, whole.operator, whole.operator.factor
        net = cfg.network
        if tile == "auto":
            tile = choose_tile(cfg, whole.layout.channels, resolve_device(cfg.device), factor=f)
        overlap = settle_overlap(tile, overlap, net, f)
        spec = task_for(task, operator)
        pass_through = spec.mask in ("required", "random") and op.identity
        sub_task = None if spec.name == "custom" else {"random": "inpaint"}.get(spec.name, spec.name)
        blurs = volume_blurs(op)
        if blurs:
            raise DIPError("tiles run each slice's tiles on their own, so a 3D PSF's partner cannot be 3D "
                           "Richardson-Lucy there: run the z-stack without tiles, or tile it with the PSF's "
                           f"in-focus plane, psf[{blurs[0].focus}].")
        # the tiles' task options as the operator holds them (a PSF: its 2D array; psf_z: the default)
        options = {} if spec.name == "custom" else {o.name: getattr(op, o.name, o.default) for o in spec.options}
        tiles = plan(whole.images.shape[2:], tile, overlap)
        parts = []
        for s in range(whole.slices):
            image_s, masks_s = np.asarray(whole.images[s]), whole.masks[s]
            for index in tiles_to_run(tiles, masks_s if pass_through else None):
                rows, cols, _ = tiles[index]
                ref = None if whole.references is None else whole.references[s][(slice(None), *scaled(rows, cols, f))]
                parts.append((s * len(tiles) + index,
                              prepare(image_s[:, rows, cols], masks_s[:, rows, cols], task=sub_task, reference=ref,
                                      channel_axis=0, config=cfg, keep_observed=whole.keep_observed,
                                      validate=validate, classical=classical, threads=threads,
                                      operator=op if spec.name == "custom" else None, **options)))
        # a tile is already in [0, 1] units: its PSNRs count the whole image's range as the peak
        parts = [(index, replace(part, psnr_peak=whole.psnr_peak)) for index, part in parts]
        return cls(whole, tile, overlap, tiles, parts)

    def estimate(self, measure: bool = True) -> timing.Estimate:
        """How long the tiles that run take here (:meth:`Problem.estimate` of each; tiles of one
        size share their calibration, and their classical answers are kept for the run)."""
        if not self.parts:
            return replace(self.whole.estimate(measure=False), iterations=0, total_s=0.0, runs=0)
        return timing.combine([part.estimate(measure) for _, part in self.parts])

    def restore(self, callback=None, stop=None, client=None, checkpoint_dir=None,
                checkpoint_every_s: float = 300.0) -> "RestoreResult":
        """Run the tiles (see :func:`restore_tiled`) and blend them."""
        store = (PartStore(checkpoint_dir, self.fingerprint(), checkpoint_every_s, kind="tile")
                 if checkpoint_dir is not None else None)
        for kind, index, payload in self.solve(stop=stop, store=store, client=client):
            if kind == "event" and callback is not None:
                callback(payload, index)
        return self.result()

    def fingerprint(self) -> str:
        """Of the whole problem and the tiling (a store of other tiles is refused)."""
        first = self.parts[0][1] if self.parts else self.whole
        return self.whole.fingerprint(self.tile, self.overlap, first.validate, first.classical)

    def solve(self, stop=None, store=None, client=None, start: dict | None = None):
        """The tiles that run, here in turn or on a Dask ``client`` at once (see
        :func:`src_core.parts.solve_parts`, which takes ``start`` too); answers are kept for
        :meth:`result`."""
        threads = 1 if client is not None and self.whole.threads is not None else None
        parts = [(i, replace(part, threads=threads) if threads else part) for i, part in self.parts]
        for kind, index, payload in solve_parts(parts, stop=stop, store=store, client=client,
                                                notes=self.whole.notes, what="tile", start=start):
            if kind in ("answer", "loaded"):
                self.answers[index] = payload
            self.stopped = self.stopped or kind == "stopped" or (
                kind == "answer" and cut_short(payload.history, self.whole.config))
            yield kind, index, payload

    def span(self, index: int) -> tuple[slice, slice]:
        """Where tile ``index`` lies in the answer (rows, columns; super-resolution's are larger)."""
        from .tiles import scaled

        rows, cols, _ = self.tiles[index % len(self.tiles)]
        return scaled(rows, cols, self.whole.operator.factor)

    def blend(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The blended answer, classical answer and restarts' spread, (N, C, H, W) in [0, 1]:
        tiles that ran give theirs, the others (and tiles a stop left out) the input (and no
        spread), each weighted by its raised-cosine weight.  Adds the tiling and, with a
        reference, the PSNRs to the notes."""
        whole, f, n = self.whole, self.whole.operator.factor, len(self.tiles)
        c, h, w = whole.images.shape[1:]
        with_classical = bool(self.answers) and all(a.classical is not None for a in self.answers.values())
        with_spread = bool(self.answers) and all(a.spread is not None for a in self.answers.values())
        finals, classicals, spreads = [], [], []
        for s in range(whole.slices):
            acc = np.zeros((c, h * f, w * f))
            acc_classical = np.zeros_like(acc) if with_classical else None  # tiled and blended alike
            acc_spread = np.zeros_like(acc) if with_spread else None
            weight = np.zeros((h * f, w * f))
            plane = None  # slice s's input, read only where a tile of it did not run
            for index, (rows, cols, wt) in enumerate(self.tiles):
                out_rows, out_cols = self.span(index)
                part = self.answers.get(s * n + index)
                if part is not None:
                    answer = np.asarray(part.answer, dtype=np.float64)
                    classical_part = part.classical if with_classical else None
                    if with_spread:
                        acc_spread[:, out_rows, out_cols] += enlarge(wt, f) * part.spread
                else:
                    plane = np.asarray(whole.images[s]) if plane is None else plane
                    answer = classical_part = enlarge(plane[:, rows, cols], f)
                wt = enlarge(wt, f)
                acc[:, out_rows, out_cols] += wt * answer
                if with_classical:
                    acc_classical[:, out_rows, out_cols] += wt * classical_part
                weight[out_rows, out_cols] += wt
            finals.append((acc / weight).astype(np.float32))
            if with_classical:
                classicals.append((acc_classical / weight).astype(np.float32))
            if with_spread:
                spreads.append((acc_spread / weight).astype(np.float32))
        final = np.stack(finals)
        classical_final = np.stack(classicals) if with_classical else None
        spread = np.stack(spreads) if with_spread else None
        ran = sorted(self.answers)
        per = "" if whole.slices == 1 else " per slice"
        which = ("all" if len(ran) == n * whole.slices else ran if whole.slices == 1 else
                 "; ".join(f"slice {s}: {[i % n for i in ran if i // n == s]}" for s in range(whole.slices)))
        whole.notes.append(f"tiled: {n} tile(s){per} of {self.tile} px with {self.overlap} px overlap, "
                           f"blended with raised-cosine weights; {len(ran)} ran ({which})")
        if whole.references is not None:
            def psnr(stack):  # of the whole stack, one figure
                return float(np.mean([psnr_ssim(x, ref, with_ssim=False, peak=whole.psnr_peak)[0]
                                      for x, ref in zip(stack, whole.references)]))

            versus = "" if classical_final is None else (
                f", the {self.answers[ran[0]].history.summary.get('classical_method')} answer tiled alike "
                f"{psnr(classical_final):.2f} dB")
            whole.notes.append(f"PSNR of the whole tiled answer: {psnr(final):.2f} dB" + versus)
        return final, classical_final, spread

    def result(self) -> RestoreResult:
        """The blended answer in the user's form (see :meth:`blend`)."""
        whole = self.whole
        final, classical_final, spread = self.blend()
        histories = [self.answers[i].history for i in sorted(self.answers)]  # one per tile that ran
        return RestoreResult(whole.to_user(final), whole.corrupted(), whole.masks, histories, whole.config,
                             whole.task, list(whole.notes),
                             None if classical_final is None else whole.to_user(classical_final),
                             whole.keep_observed, 0.0, self.stopped,
                             None if spread is None else whole.spread_to_user(spread))
