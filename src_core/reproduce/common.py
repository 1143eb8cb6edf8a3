"""Shared machinery of the reproduction commands.

* a results folder that remembers the configuration it was written with
  (``fingerprint.json``) and refuses to mix in results of another one;
* one JSON file (plus arrays where a figure needs them) per finished unit of
  work, written atomically, so an interrupted command picks up where it
  stopped and never redoes a finished unit;
* the run environment (device, library versions, git commit) for table
  headers;
* loading, cropping and downscaling the images with errors that name the file;
* one DIP run with a progress bar, PSNR helpers, and labels that say whether
  a result was produced with the paper's setting.

The files themselves are written by :mod:`src_core.reports`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import speed
from ..config import HOW_IT_RUNS
from ..errors import DIPError
from ..io import atomic_path
from ..reports import clean_json, fmt_ms, read_json, write_json, write_markdown_and_json  # noqa: F401 (fmt_ms: tests)

# ----------------------------------------------------------------------------- the paper's numbers

#: Table 1 of Ulyanov et al. (CVPR 2018), 50% of pixels missing, PSNR in dB (docs/paper.md §1).
TABLE1_IMAGES = ("barbara", "boat", "house", "lena", "peppers", "cameraman", "couple", "fingerprint",
                 "hill", "man", "montage")
PAPER_DIP = {"barbara": 32.22, "boat": 33.06, "house": 39.16, "lena": 36.16, "peppers": 33.05,
             "cameraman": 29.8, "couple": 32.52, "fingerprint": 32.84, "hill": 32.77, "man": 32.20,
             "montage": 34.54}
PAPYAN = {"barbara": 28.14, "boat": 31.44, "house": 34.58, "lena": 35.04, "peppers": 31.11,
          "cameraman": 27.90, "couple": 31.18, "fingerprint": 31.34, "hill": 32.35, "man": 31.92,
          "montage": 28.05}
PAPER_MEAN = {"dip": 33.48, "papyan": 31.19}

PRESET_NAMES = ("paper", "quick", "tiny")
NOT_PAPER = "NOT the paper's setting"


# ----------------------------------------------------------------------------- labels

def setting_label(preset: str, overrides: dict, details: str) -> tuple[str, bool]:
    """A one-line label for every output, and whether it is the paper's setting.

    ``details`` describes what the preset changes (for quick and tiny).
    """
    if preset == "paper" and not overrides:
        return "paper preset: the paper's settings (full-size images, docs/paper.md §4)", True
    if preset == "paper":
        return (f"paper preset with overrides {_fmt_overrides(overrides)}: {NOT_PAPER} "
                "(exactly)"), False
    extra = f"; overrides {_fmt_overrides(overrides)}" if overrides else ""
    if preset == "quick":
        return f"quick preset, {NOT_PAPER}: CPU-sized ({details}){extra}", False
    if preset == "tiny":
        return f"tiny test preset, {NOT_PAPER}: for tests only, numbers are meaningless{extra}", False
    raise DIPError(f"unknown reproduction preset {preset!r}; choose one of {PRESET_NAMES}.")


def not_paper_banner(label: str, is_paper: bool, note: str = "") -> str:
    """The quote that opens a report not made with the paper's setting (empty if it was)."""
    return "" if is_paper else f"> **{NOT_PAPER.upper()}.** {label}.{note}\n\n"


def _fmt_overrides(overrides: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))


def check_preset(preset: str) -> None:
    if preset not in PRESET_NAMES:
        raise DIPError(f"unknown reproduction preset {preset!r}; choose one of {PRESET_NAMES}.")


# ----------------------------------------------------------------------------- fingerprints

def fingerprint(settings: dict) -> str:
    """A short hash of everything that decides the results (canonical JSON)."""
    text = json.dumps(clean_json(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _flatten(data, prefix=""):
    out = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = data
    return out


def settings_diff(old: dict, new: dict, limit: int = 6) -> str:
    a, b = _flatten(clean_json(old)), _flatten(clean_json(new))
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    parts = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts) or "no setting differs, but the fingerprint does"


# ----------------------------------------------------------------------------- results folder

class ResultsFolder:
    """A folder of finished units for one command and one configuration.

    ``fingerprint.json`` holds the command, the settings and their hash.  A
    folder written with other settings is refused (never silently mixed);
    so is a non-empty folder that is not a results folder at all.  Each unit
    is ``units/<id>.json`` (written last, atomically: it marks the unit as
    done) and optionally ``units/<id>.npz``.
    """

    def __init__(self, root, command: str, settings: dict):
        self.root = Path(root)
        self.command = command
        self.settings = clean_json(settings)
        self.fingerprint = fingerprint(self.settings)
        self.units_dir = self.root / "units"
        self.created_env: dict = {}

    @property
    def marker(self) -> Path:
        return self.root / "fingerprint.json"

    def open(self, environment: dict | None = None) -> "ResultsFolder":
        if self.root.exists() and not self.root.is_dir():
            raise DIPError(f"output path {self.root} exists and is not a folder.")
        if self.marker.exists():
            data = read_json(self.marker)
            if data.get("command") != self.command:
                raise DIPError(
                    f"results folder {self.root} holds results of 'dip reproduce {data.get('command')}', "
                    f"not '{self.command}'; choose another --output-dir.")
            self.created_env = data.get("environment") or {}
            if data.get("fingerprint") != self.fingerprint:
                raise DIPError(
                    f"results folder {self.root} was written with a different configuration "
                    f"({settings_diff(data.get('settings', {}), self.settings)}); its results would be "
                    "mixed with this run's. Use another --output-dir, or delete the folder to start over.")
            return self
        if self.root.exists() and any(self.root.iterdir()):
            raise DIPError(
                f"{self.root} is not empty and is not a 'dip reproduce' results folder (it has no "
                "fingerprint.json); choose a new or empty --output-dir.")
        self.units_dir.mkdir(parents=True, exist_ok=True)
        self.created_env = environment or {}
        write_json(self.marker, {"command": self.command, "fingerprint": self.fingerprint,
                                 "settings": self.settings,
                                 "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                                 "environment": environment or {}})
        return self

    def unit_path(self, uid: str) -> Path:
        return self.units_dir / f"{uid}.json"

    def has(self, uid: str) -> bool:
        path = self.unit_path(uid)
        if not path.exists():
            return False
        record = read_json(path)
        if record.get("fingerprint") != self.fingerprint:
            raise DIPError(f"{path} was written with another configuration (fingerprint "
                           f"{record.get('fingerprint')}, this folder's is {self.fingerprint}); "
                           "refusing to mix it into this table.")
        return True

    def load(self, uid: str) -> dict:
        return read_json(self.unit_path(uid))

    def load_arrays(self, uid: str) -> dict:
        path = self.units_dir / f"{uid}.npz"
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise DIPError(f"could not read {path}: {exc}") from None

    def save(self, uid: str, record: dict, arrays: dict | None = None) -> Path:
        self.units_dir.mkdir(parents=True, exist_ok=True)
        if arrays:
            with atomic_path(self.units_dir / f"{uid}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, **arrays)
        record = dict(record, unit=uid, fingerprint=self.fingerprint,
                      finished=time.strftime("%Y-%m-%d %H:%M:%S %z"))
        return write_json(self.unit_path(uid), record)


# ----------------------------------------------------------------------------- environment

def _git(*args, cwd) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """The commit of the source tree this package runs from, and whether it has local changes."""
    here = Path(__file__).resolve().parent
    commit = _git("rev-parse", "HEAD", cwd=here)
    if not commit:
        return {"commit": "unknown (not a git checkout)", "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=here)
    return {"commit": commit, "dirty": bool(status)}


def environment() -> dict:
    import matplotlib
    import skimage
    import torch

    from .. import __version__

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "matplotlib": matplotlib.__version__,
        "napari-dip": __version__,
        "platform": platform.platform(),
        "cpu": speed.cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    env.update({"git_" + k: v for k, v in git_state().items()})
    return env


RUN_ENV_KEYS = ("python", "torch", "numpy", "scikit-image", "napari-dip", "cpu", "torch_threads", "gpu",
                "git_commit", "git_dirty")


def run_env(env: dict) -> dict:
    """The part of the environment each unit records about the run that made it."""
    return {k: env.get(k) for k in RUN_ENV_KEYS}


# ----------------------------------------------------------------------------- images

def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_image(name: str, data_dir, shipped_folder: str) -> Path:
    """``data_dir/<name>.png`` if a data folder is given, else the shipped copy."""
    from ..io import data_path

    if data_dir is not None:
        path = Path(data_dir) / (name if Path(name).suffix else f"{name}.png")
        if not path.is_file():
            raise DIPError(f"image file not found: {path}")
        return path
    return data_path(f"{shipped_folder}/{name}" + ("" if Path(name).suffix else ".png"))


def display_path(path) -> str:
    """A path relative to the checkout (or the installed package's parent) when possible."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path(__file__).resolve().parents[2]))
    except ValueError:
        return str(path)


def load_unit_image(path: Path) -> np.ndarray:
    """Read an image as (C, H, W) float32 in [0, 1]; the error names the file."""
    from ..io import read_image

    data = read_image(path)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = data[..., :3]
    elif data.ndim != 2:
        raise DIPError(f"image {path} has shape {data.shape}; expected a 2D grayscale or RGB image.")
    if data.dtype.kind in "iu":
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    elif data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise DIPError(f"image {path} has non-finite values; a ground-truth image must be clean.")
        lo, hi = float(data.min()), float(data.max())
        data = ((data - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32) if (lo < 0 or hi > 1) else data
    else:
        raise DIPError(f"image {path} has unsupported dtype {data.dtype}.")
    data = np.asarray(data, dtype=np.float32)
    return data[None] if data.ndim == 2 else np.ascontiguousarray(np.moveaxis(data, -1, 0))


def load_matching_mask(mask_path: Path, image_path: Path, original_chw: np.ndarray) -> np.ndarray:
    """The observed-pixel mask of an image, refused unless it has the image's size."""
    from ..masks import load_mask

    mask = load_mask(mask_path)
    if mask.shape != original_chw.shape[1:]:
        raise DIPError(f"mask {mask_path} is {mask.shape[::-1]} but image {image_path} is "
                       f"{original_chw.shape[:0:-1]}; they must have the same size.")
    return mask


def prepare_image(chw: np.ndarray, prep: dict) -> np.ndarray:
    """Apply a preparation step: ``full``, centre ``crop`` of ``size`` or box ``downscale`` by ``factor``."""
    mode = prep.get("mode", "full")
    if mode == "full":
        return chw
    if mode == "crop":
        return centre_crop(chw, int(prep["size"]))
    if mode == "downscale":
        return downscale(chw, int(prep["factor"]))
    raise DIPError(f"unknown image preparation {prep!r}.")


def prepare_mask(mask: np.ndarray, prep: dict) -> np.ndarray:
    """The same step on an observed-pixel mask: a downscaled pixel is observed only if all of
    its block was (a pixel touched by the text stays missing)."""
    mode = prep.get("mode", "full")
    if mode == "full":
        return mask
    if mode == "crop":
        return centre_crop(mask[None], int(prep["size"]))[0]
    f = int(prep["factor"])
    h, w = mask.shape
    blocks = mask[: h // f * f, : w // f * f].reshape(h // f, f, w // f, f)
    return blocks.all(axis=(1, 3))


def centre_crop(chw: np.ndarray, size: int) -> np.ndarray:
    h, w = chw.shape[-2:]
    sh, sw = min(size, h), min(size, w)
    top, left = (h - sh) // 2, (w - sw) // 2
    return np.ascontiguousarray(chw[..., top:top + sh, left:left + sw])


def downscale(chw: np.ndarray, factor: int) -> np.ndarray:
    """Box average over ``factor`` x ``factor`` blocks, then rounded to 8-bit levels (the
    ground truth stays an 8-bit image, like the originals)."""
    c, h, w = chw.shape
    blocks = chw[:, : h // factor * factor, : w // factor * factor].astype(np.float64)
    out = blocks.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return (np.round(out * 255.0) / 255.0).astype(np.float32)


def describe_prep(prep: dict) -> str:
    mode = prep.get("mode", "full")
    if mode == "full":
        return "full-size images"
    if mode == "crop":
        return f"{prep['size']}x{prep['size']} centre crops at the original resolution"
    return f"images downscaled {prep['factor']}x (box average)"


def to_user(chw: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, C), the engine API's layouts."""
    return chw[0] if chw.shape[0] == 1 else np.moveaxis(chw, 0, -1)


def from_user(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array, dtype=np.float32)
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)


# ----------------------------------------------------------------------------- metrics

def psnr(estimate_chw: np.ndarray, reference_chw: np.ndarray) -> float:
    """PSNR in dB (data range 1, estimate clipped to [0, 1], whole image), as the engine."""
    from ..engine import psnr_ssim

    return psnr_ssim(np.asarray(estimate_chw, np.float32), reference_chw, with_ssim=False)[0]


def ssim(estimate_chw: np.ndarray, reference_chw: np.ndarray) -> float | None:
    from ..engine import psnr_ssim

    return psnr_ssim(np.asarray(estimate_chw, np.float32), reference_chw, with_ssim=True)[1]


def psnr_holes(estimate_chw: np.ndarray, reference_chw: np.ndarray, mask_hw: np.ndarray) -> float | None:
    """PSNR over the missing pixels only (all channels): how well the holes were filled."""
    missing = ~np.asarray(mask_hw, dtype=bool)
    if not missing.any():
        return None
    err = (np.clip(np.asarray(estimate_chw, np.float64), 0, 1) - reference_chw)[:, missing]
    mse = float(np.mean(err ** 2))
    return None if mse <= 0 else -10.0 * math.log10(mse)


def observed_kept(estimate_chw: np.ndarray, reference_chw: np.ndarray, mask_hw: np.ndarray) -> np.ndarray:
    """The estimate with the observed pixels pasted back (a post-processing step that needs no
    ground truth: the observed pixels are the input)."""
    return np.where(np.asarray(mask_hw, dtype=bool)[None], reference_chw, np.clip(estimate_chw, 0, 1))


def mean_std(values) -> tuple[float | None, float | None, int]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return float(np.mean(vals)), std, len(vals)


def psnr_curve(history: dict) -> tuple[list, list]:
    """(iterations, PSNR) of a run's reports, as the plots take a curve."""
    return history["iterations"], history["psnr"]


def history_at(history: dict, iteration: int) -> float | None:
    """The PSNR recorded at the last report at or before ``iteration``."""
    best = None
    for it, value in zip(history.get("iterations", []), history.get("psnr", [])):
        if it <= iteration:
            best = value
    return best


def oracle(history: dict) -> tuple[float | None, int | None]:
    """Best PSNR over the reports and its iteration: chosen with the ground truth (an oracle)."""
    pairs = [(v, it) for it, v in zip(history.get("iterations", []), history.get("psnr", []))
             if v is not None]
    if not pairs:
        return None, None
    value, it = max(pairs, key=lambda p: (p[0], -p[1]))
    return value, it


def destabilisation_events(loss, drop_db: float = 5.0, window: int = 100) -> list[dict]:
    """Sudden falls of the fit: iterations where the fitting loss, in dB, is more than
    ``drop_db`` worse than its best over the previous ``window`` iterations.

    Counted from the loss of every iteration (no ground truth needed); one
    event per onset, with the depth of the fall over the next ``window``
    iterations; onsets less than ``window`` iterations after the previous
    event belong to it (:func:`merge_events`).  The same rule is applied
    with and without the guard.

    >>> loss = [1e-3] * 300; loss[150:160] = [1e-1] * 10
    >>> [(e["iteration"], round(e["drop_db"])) for e in destabilisation_events(loss)]
    [(151, 20)]
    """
    x = np.asarray([np.nan if v is None else v for v in loss], dtype=np.float64)
    if x.size < 2:
        return []
    db = -10.0 * np.log10(np.maximum(x, 1e-30))
    db[~np.isfinite(x)] = -np.inf
    events = []
    previous = False
    for t in range(1, db.size):
        ref = np.max(db[max(0, t - window):t])
        now = db[t] < ref - drop_db
        if now and not previous:
            low = np.min(db[t:t + window])
            events.append({"iteration": t + 1, "drop_db": float(ref - low)})
        previous = now
    return merge_events(events, window)


def merge_events(events, window: int = 100) -> list[dict]:
    """One event per fall: onsets within ``window`` iterations of the last event join it."""
    kept: list[dict] = []
    for event in events:
        if kept and event["iteration"] - kept[-1]["iteration"] < window:
            kept[-1]["drop_db"] = max(kept[-1]["drop_db"], event["drop_db"])
            continue
        kept.append(dict(event))
    return kept


# ----------------------------------------------------------------------------- one DIP run

@dataclass
class DIPOutcome:
    output: np.ndarray       # (C, H, W) float32 in [0, 1]
    history: dict
    wall_s: float
    device: str
    batch_seeds: list | None = None  # the seeds fitted together with this one, if batched


def run_dip(image_chw: np.ndarray, mask_hw: np.ndarray | None, reference_chw: np.ndarray, config,
            progress=None, task: str = "inpaint", **task_options) -> DIPOutcome:
    """One DIP run through the public API (``src_core.restore``), the paper's way: inpainting
    by default, or another registered task (``task="sr", factor=4``).

    Every reproduction command goes through here (tests count the calls).
    """
    from ..api import restore

    callback = None if progress is None else progress.callback
    t0 = time.perf_counter()
    # the paper's protocol: the network's raw output, every observed pixel fitted, no blend
    result = restore(to_user(image_chw), mask_hw, task=task, reference=to_user(reference_chw),
                     config=config, callback=callback, keep_observed=False, validate=0, classical=None,
                     **task_options)
    wall = time.perf_counter() - t0
    history = result.history.to_dict()
    history.pop("config", None)  # the unit record holds the configuration once
    return DIPOutcome(from_user(result.image), history, wall, result.history.device)


def run_dip_restarts(image_chw: np.ndarray, masks_hw: list, reference_chw: np.ndarray, config, seeds,
                     progress=None) -> list[DIPOutcome]:
    """Several seeds of :func:`run_dip` on one image as one batch of networks (``DIPEnsemble``).

    Each member is built, drawn and masked exactly as its single run would
    be, so the results are those runs' (up to the order of floating-point
    sums).  Whether one pass over K networks beats K passes depends on the
    device and size (slower at 512x512 on an H100, docs/benchmarks.md).
    ``wall_s`` of each is the batch's time divided by K.
    """
    from ..engine import DIPEnsemble

    k = len(seeds)
    images = np.repeat(image_chw[None], k, axis=0)
    batch = DIPEnsemble(images, np.stack([m[None] for m in masks_hw]), config, references=reference_chw,
                     seeds=list(seeds))
    t0 = time.perf_counter()
    finished = None
    for event in batch:
        if event.kind == "progress" and progress is not None:
            progress.batch_callback(event, k)
        finished = event
    wall = time.perf_counter() - t0
    outcomes = []
    for output, history in zip(finished.outputs, finished.histories):
        history = history.to_dict()
        history.pop("config", None)
        outcomes.append(DIPOutcome(output, history, wall / k, history["device"], list(seeds)))
    return outcomes


def to_8bit(array: np.ndarray) -> np.ndarray:
    """An output as 8-bit levels, the copy a unit keeps for its figures (PSNRs use the float output)."""
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)


def Progress(total: int, done: int, desc: str, quiet: bool = False):
    """One bar over all iterations of a reproduction command (:class:`src_core.progress.ProgressBar`)."""
    from ..progress import ProgressBar

    return ProgressBar(total, desc, quiet, done=done)


# ----------------------------------------------------------------------------- how it runs, and the record of it

def run_options(overrides: dict, device: str, compile_mode: str) -> dict:
    """Take out of ``overrides`` the settings that choose how the runs go, not what they compute
    (:data:`src_core.config.HOW_IT_RUNS`: device, precision, memory format, compile): they stay
    outside the results folder's fingerprint, and each unit records its own.  Returned as
    ``RunConfig.replace`` takes them; precision and memory format only when given."""
    run = {"device": overrides.pop("device", device), "compile": overrides.pop("compile", compile_mode)}
    run.update({key: overrides.pop(key) for key in HOW_IT_RUNS if key in overrides})
    return run


def recorded(run: dict, overrides: dict) -> dict:
    """The overrides and :func:`run_options`' result as :func:`python_command` records them: a
    precision or memory format given goes back among the overrides (where the call takes it),
    compile only unless "auto"."""
    given = dict(overrides, **{k: v for k, v in run.items() if k not in ("device", "compile")})
    return {"overrides": given or None, "device": run["device"],
            "compile_mode": None if run["compile"] == "auto" else run["compile"]}


def python_command(function: str, **kwargs) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)
    return f"python: src_core.reproduce.{function}({args})"


def report_result(folder: ResultsFolder, stem: str, lines: list[str], summary: dict) -> dict:
    """Write ``<stem>.md`` and ``<stem>.json``: what every reproduction command answers."""
    markdown = write_markdown_and_json(folder.root, stem, lines, summary)
    return {"folder": str(folder.root), "markdown": str(markdown), "summary": clean_json(summary)}
