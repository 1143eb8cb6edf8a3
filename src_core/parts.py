"""Independent one-slice problems run in turn here, or all at once on a Dask cluster.

A stack's slices and a large image's tiles are both lists of one-slice
:class:`~src_core.problem.Problem` parts, so one loop serves both: here, with
every engine event as it comes; or on a ``distributed.Client``, where each
part is one task and its answer arrives when it finishes (in any order).
A :class:`PartStore` keeps finished parts on disk so a later call skips them,
and the running part's checkpoint so it resumes where it was.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .checkpoint import Checkpoint
from .engine import Finished, History
from .errors import DIPError, Diverged
from .io import atomic_path, check_writable, json_default

#: how often the client looks for finished parts and for a stop request (seconds)
POLL_S = 0.2


class PartAnswer(NamedTuple):
    """A finished part: its (C, H, W) answer, history, classical answer (or None) and, with
    restarts, their spread (or None)."""

    answer: np.ndarray
    history: History
    classical: np.ndarray | None = None
    spread: np.ndarray | None = None


class PartStore:
    """A folder that keeps finished parts (``<kind>-00000.done.npz``) and the running one's
    checkpoint, all marked with the fingerprint of the whole problem they belong to."""

    def __init__(self, folder, fingerprint: str, every_s: float, kind: str = "slice"):
        self.folder = check_writable(folder)
        self.fingerprint = fingerprint
        self.every_s = every_s
        self.kind = kind

    def checkpoint(self, index: int) -> Checkpoint:
        return Checkpoint(self.folder / f"{self.kind}-{index:05d}.ckpt", self.every_s)

    def _done(self, index: int) -> Path:
        return self.folder / f"{self.kind}-{index:05d}.done.npz"

    def finished(self, index: int) -> bool:
        return self._done(index).is_file()

    def save(self, index: int, answer: np.ndarray, history: History, classical=None, spread=None,
             weights=None) -> None:
        """Keep a finished part (and its network's final weights, where a neighbour starts from them)."""
        extra = {name: a for name, a in (("classical", classical), ("spread", spread)) if a is not None}
        extra.update({WEIGHTS + name: t.float().numpy() for name, t in (weights or {}).items()})
        with atomic_path(self._done(index)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, answer=answer, fingerprint=self.fingerprint,
                         history=json.dumps(history.to_dict(), default=json_default), **extra)
        self.checkpoint(index).remove()

    def load(self, index: int) -> PartAnswer:
        """A finished part as it was saved."""
        try:
            with np.load(self._done(index), allow_pickle=False) as data:
                if str(data["fingerprint"]) != self.fingerprint:
                    raise DIPError(f"{self._done(index)} belongs to another image, mask or configuration; "
                                   "use another checkpoint folder, or delete this one.")
                answer, history = data["answer"], History(**json.loads(str(data["history"])))
                classical = data["classical"] if "classical" in data.files else None
                spread = data["spread"] if "spread" in data.files else None
        except (OSError, ValueError, KeyError) as exc:
            raise DIPError(f"cannot read the finished {self.kind} {self._done(index)} ({exc}); delete it "
                           f"to run that {self.kind} again.") from None
        history.notes.append("finished in an earlier call (loaded from the checkpoint folder)")
        return PartAnswer(answer, history, classical, spread)

    def weights(self, index: int) -> dict | None:
        """A finished part's final network weights, if they were kept (a warm start's)."""
        import torch

        with np.load(self._done(index)) as data:
            names = [k for k in data.files if k.startswith(WEIGHTS)]
            return {k[len(WEIGHTS):]: torch.from_numpy(data[k]) for k in names} or None


#: the prefix of a kept part's network weights in its .done.npz
WEIGHTS = "weights/"


def solve_part(part, stop=None, checkpoint=None):
    """Run a one-slice problem to its end: its :class:`PartAnswer`.

    What a Dask worker does for one slice or tile (also usable on its own).
    """
    if checkpoint is not None:
        checkpoint.last = time.monotonic()  # this process's clock, not the client's
    for kind, _, payload in _solve_here(part, 0, stop, checkpoint):
        if kind == "answer":
            return payload
    raise DIPError("the part ended without an answer")  # pragma: no cover (the engine always finishes)


def _solve_here(part, index: int, stop, checkpoint, start=None):
    run = part.run(0, stop=stop, checkpoint=checkpoint, start=start)
    finished = None
    try:
        yield "start", index, run
        for event in run:
            yield "event", index, event
            if isinstance(event, Finished):
                finished = event
    finally:
        run.close()
    answer = part.answer(0, finished)
    finished.history.notes.extend(part.notes)
    finished.history.part = index
    yield "answer", index, PartAnswer(answer, finished.history, part.computed_classical(0), part.spread(0, finished))


def solve_parts(parts, *, stop=None, store: PartStore | None = None, client=None, notes=None,
                what: str = "slice", warm: bool = False, start: dict | None = None):
    """Restore ``parts`` (``(index, one-slice Problem)`` pairs, or ``(index, function making
    it)`` so a lazy stack's slice is read only when its turn comes): the one loop of slices
    and tiles.

    A generator of ``(kind, index, payload)``: ``("start", i, run)`` when a
    part's run is built here (``run.close()`` abandons it), ``("event", i,
    event)`` for each engine event here, ``("answer", i, PartAnswer)`` when a part's answer is put together (here or
    on the cluster), ``("loaded", i, ...)`` the same for a part the ``store``
    finished earlier, and ``("stopped", i, None)`` once ``stop`` is set (no
    further part starts; on a cluster, what finished is kept and the rest is
    cancelled: a running part's work is lost).  ``history.part`` is ``i``.  ``warm``: the
    parts are neighbours (a stack's slices), so ``config.warm_start`` applies to them here.
    ``start``: the first part run here starts from these weights, whatever ``warm_start`` says.
    Here, errors propagate from the part they happen in; on a cluster, from
    the first part that fails, after the others that finished with it.
    """
    notes = [] if notes is None else notes
    todo = []
    loaded = []  # parts the store finished earlier (a warm start may begin from one)
    for index, part in parts:
        if store is not None and store.finished(index):
            done = store.load(index)
            done.history.part = index
            loaded.append(index)
            yield "loaded", index, done
        else:
            todo.append((index, part))
    if client is not None:
        if start is not None:
            raise DIPError("start weights are for parts run here, one after another; a cluster's parts "
                           "start from random weights.")
        todo = [(i, _made(p)) for i, p in todo]
        if warm and todo and todo[0][1].config.warm_start > 0:
            notes.append(f"warm_start: on a cluster every {what} runs at once, so each starts from random weights")
        yield from _solve_on_cluster(client, todo, stop, store, notes, what)
        return
    yield from _solve_in_turn(todo, loaded, stop, store, notes, what, warm, start)


def _solve_in_turn(todo, loaded: list, stop, store, notes, what, warm: bool, start: dict | None = None):
    """The parts here, one after another; with ``warm_start`` each starts from the weights of
    the part before it (the last one finished here, or else the nearest earlier one the store
    kept: read only then); the first from ``start`` where given."""
    previous = given = start
    for position, (index, part) in enumerate(todo):
        if position > 0 and stop is not None and stop.is_set():
            left = [i for i, _ in todo[position:]]
            notes.append(f"stopped before {what} {index}: {_named(what, left)} the input, not restored")
            yield "stopped", index, None
            return
        part = _made(part)
        warmed = (warm and part.config.warm_start > 0) or (position == 0 and given is not None)
        start = previous
        if warmed and start is None and any(i < index for i in loaded):
            start = store.weights(max(i for i in loaded if i < index))
        stopped, weights = False, None
        attempts = [start, None] if warmed and start is not None else [start if warmed else None]
        with _naming(index):
            for attempt, begin in enumerate(attempts):
                try:
                    for kind, i, payload in _solve_here(part, index, stop,
                                                        store.checkpoint(index) if store else None, begin):
                        if isinstance(payload, Finished):
                            stopped, weights = payload.stopped, payload.weights if warmed else None
                        if kind == "answer" and store is not None and not stopped:
                            store.save(index, *payload, weights=weights)
                        yield kind, i, payload
                    break
                except Diverged:
                    if attempt + 1 == len(attempts):
                        raise
                    notes.append(f"{what} {index}: its fit diverged from the weights of the {what} before; "
                                 "it ran again from random weights, with all the iterations")
        previous = weights


def _solve_on_cluster(client, todo, stop, store, notes, what):
    from distributed import as_completed

    futures = {client.submit(solve_part, part, None, store.checkpoint(index) if store else None,
                             pure=False, retries=1, key=f"dip-{what}-{index}-{time.time_ns()}"): index
               for index, part in todo}
    answered = set()

    def kept(finished):
        """The answers of finished futures not given yet; the first failure is raised after
        the others are kept."""
        failure = None
        for future in finished:
            index = futures[future]
            if index in answered:
                continue
            try:
                with _naming(index):
                    done = future.result()
            except Exception as exc:
                failure = failure or exc
                continue
            done.history.part = index
            answered.add(index)
            if store is not None:
                store.save(index, *done)
            yield "answer", index, done
        if failure is not None:
            raise failure

    waiting = as_completed(list(futures))
    try:
        while not waiting.is_empty():
            stopping = stop is not None and stop.is_set()
            if not stopping and not waiting.has_ready():
                time.sleep(POLL_S)
                continue
            yield from kept(waiting.next_batch(block=False))  # what finished is kept, stop or not
            if stopping:
                client.cancel([f for f in futures if not f.done()])
                # a part that finished after the batch above, before the cancel, is kept too
                yield from kept([f for f in futures if f.status == "finished"])
                left = sorted(i for i in futures.values() if i not in answered)
                if left:
                    notes.append(f"stopped: {_named(what, left)} the input, not restored (cancelled on the "
                                 "cluster)")
                yield "stopped", left[0] if left else -1, None
                return
    finally:
        client.cancel([f for f in futures if not f.done()])


def _made(part):
    """A part given as itself, or as the function that makes it."""
    return part() if callable(part) else part


@contextmanager
def _naming(index: int):
    """An error raised inside carries the index of the part it came from (``part_index``)."""
    try:
        yield
    except Exception as exc:
        exc.part_index = index
        raise


def _named(what: str, indices) -> str:
    """'slice 2 is', 'slices 2..4 are'."""
    return f"{what} {indices[0]} is" if len(indices) == 1 else f"{what}s {_ranges(indices)} are"


def _ranges(indices) -> str:
    """1, 2, 3, 7 -> '1..3, 7'."""
    out, run = [], []
    for i in indices:
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}..{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}..{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)
