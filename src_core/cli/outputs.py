"""The files a task run writes, all decided and checked before it starts: the outputs (never over an
input), the ``_partial`` names of a stopped run, and the checkpoint folder that ``--resume`` reads."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import DIPError
from ..io import check_writable, json_default


@dataclass(frozen=True)
class OutputPlan:
    """One run's output names: what ``output_paths`` and ``_partial_paths`` need, given once
    instead of at each of a run's steps."""

    output_dir: Path
    name: str
    suffix: str
    classical: bool
    plots: bool
    inputs: tuple
    spread: bool = False  # restarts: their spread is written too

    def paths(self) -> dict:
        return output_paths(self.output_dir, self.name, self.suffix, self.classical, self.plots, self.spread)

    def partial_paths(self) -> dict:
        return _partial_paths(self.output_dir, self.name, self.suffix, self.classical, self.plots, self.inputs,
                              self.spread)

    def check(self, overwrite: bool, resume: bool, checkpoint_minutes) -> tuple[dict, Path]:
        """Every refusal about files, before the optimisation: the outputs, the folder (a probe file
        is written), the checkpoints; returns the output paths and the checkpoint folder."""
        planned = self.paths()
        check_outputs(planned.values(), self.inputs, overwrite)
        check_writable(self.output_dir)
        return planned, _checkpoint_folder(self.output_dir, self.name, resume, overwrite, checkpoint_minutes)


def output_paths(output_dir: Path, name: str, suffix: str, classical: bool, plots: bool,
                 spread: bool = False) -> dict:
    """Every file a task run writes, by kind, decided before the run.  The spread is float
    data in the image's units: a TIFF (or .npy) whatever the input's format, which would round it."""
    out = {"restored": output_dir / f"{name}_restored{suffix}",
           "corrupted": output_dir / f"{name}_corrupted{suffix}"}
    if classical:
        out["classical"] = output_dir / f"{name}_classical{suffix}"
    if spread:
        out["spread"] = output_dir / f"{name}_spread{suffix if suffix.lower() in SPREAD_SUFFIXES else '.tif'}"
    out["history"] = output_dir / f"{name}_history.json"
    if plots:
        out["psnr_curve"] = output_dir / f"{name}_psnr.png"
    return out


#: the formats that hold a spread's float values as they are
SPREAD_SUFFIXES = (".tif", ".tiff", ".npy")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or (Path(a).exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(paths, inputs, overwrite: bool) -> None:
    """Refuse to write over an input, ever, and over an existing output unless asked to."""
    inputs = [Path(p) for p in inputs if p is not None]
    for path in paths:
        for given in inputs:
            if _same_file(path, given):
                raise DIPError(f"the output {path} would overwrite your input {given}; choose another "
                               "--name or -o.")
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise DIPError(f"{len(existing)} output file(s) exist already ({', '.join(existing[:3])}"
                       f"{', ...' if len(existing) > 3 else ''}); pass --overwrite to replace them, or "
                       "choose another --name or -o.")


def _partial_paths(output_dir: Path, name: str, suffix: str, classical: bool, plots: bool, inputs,
                   spread: bool = False) -> dict:
    """Where a stopped or failed run's partial result goes: ``<name>_partial``, -2, -3, ..."""
    return _free_names(output_paths(output_dir, f"{name}_partial", suffix, classical, plots, spread), inputs)


def _free_names(planned: dict, inputs) -> dict:
    """``planned`` as is, or with the first -2, -3, ... suffix under which nothing exists."""
    for n in range(1, 1000):
        paths = {k: (p if n == 1 else p.with_name(p.name.replace("_partial", f"_partial-{n}", 1)))
                 for k, p in planned.items()}
        if not any(p.exists() for p in paths.values()) and not any(
                _same_file(p, i) for p in paths.values() for i in inputs if i is not None):
            return paths
    raise DIPError("no free name for the partial result; clean the output folder.")


def _checkpoint_folder(output_dir: Path, name: str, resume: bool, overwrite: bool, minutes) -> Path:
    """``<name>.checkpoints``, where a run keeps what it finished until its outputs are written:
    required by ``resume``, refused without it (unless ``overwrite`` starts again)."""
    checkpoints = output_dir / f"{name}.checkpoints"
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()  # a run refused or stopped before it kept anything: nothing to resume
    if resume and not checkpoints.is_dir():
        raise DIPError(f"nothing to resume: {checkpoints} does not exist (it is removed when a run "
                       "finishes).")
    if checkpoints.exists() and not resume:
        if not overwrite:
            raise DIPError(f"an interrupted run left its checkpoints in {checkpoints}: add --resume to "
                           "continue it, or --overwrite to start again.")
        shutil.rmtree(checkpoints)
    if not isinstance(minutes, (int, float)) or not minutes >= 0:
        raise DIPError(f"--checkpoint-every must be >= 0 minutes (got {minutes}).")
    if resume:
        kept = sum(1 for _ in checkpoints.iterdir())
        print(f"dip: resuming from {checkpoints} ({kept} saved file(s): finished slices or tiles, and "
              "the last save of the one that was running)", flush=True)
    return checkpoints


def write_outputs(result, planned: dict, task: str, name: str, wall: float, form=None) -> dict:
    """Write the images, the history and the PSNR plot (each atomically); return kind -> path.
    ``form``: the input file's :class:`src_core.io.FileForm`, which every image takes."""
    from ..io import FileForm, write_image, write_text
    from ..plots import history_curves, history_marks, plot_psnr_curves

    image = (form or FileForm()).write
    written = {"restored": image(planned["restored"], result.image),
               "corrupted": image(planned["corrupted"], result.corrupted)}
    if "classical" in planned and result.classical is not None:
        written["classical"] = image(planned["classical"], result.classical)
    if "spread" in planned and result.spread is not None:  # no alpha plane: it is not an image to look at
        written["spread"] = write_image(planned["spread"], result.spread, like=(form or FileForm()).tiff)
    record = result.to_dict()
    record["command"] = " ".join(["dip", *sys.argv[1:]]) if sys.argv[0].endswith("dip") else None
    record["wall_s"] = wall
    written["history"] = write_text(planned["history"], json.dumps(record, indent=1, default=json_default))
    if "psnr_curve" in planned:
        h = result.history
        written["psnr_curve"] = plot_psnr_curves(
            history_curves(h), planned["psnr_curve"],
            title=f"{name}: DIP {task}, preset {result.config.preset}", marks=history_marks(h))
    return written


def write_final(result, planned: dict, checkpoints: Path, task: str, name: str, wall: float, form) -> dict:
    """Write a run's outputs; once a finished run's are written its checkpoints have nothing left to
    resume, so they go (a stopped run keeps them for ``--resume``)."""
    written = write_outputs(result, planned, task, name, wall, form)
    if not result.stopped:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return written
