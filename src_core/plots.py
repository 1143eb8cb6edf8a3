"""PSNR curves and image panels as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_psnr_curves(curves: dict, path, title: str = "", ylabel: str = "PSNR (dB)",
                     marks: Sequence[tuple[int, str]] = ()) -> Path:
    """One line per entry of ``curves``: name -> (iterations, values).

    ``marks``: (iteration, label) vertical lines, e.g. guard recoveries or an
    early stop.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, (x, y) in curves.items():
        y = np.array([np.nan if v is None else v for v in y], dtype=float)
        ax.plot(x, y, label=name, linewidth=1.4)
    for it, label in marks:
        ax.axvline(it, color="grey", linestyle=":", linewidth=1)
        ax.text(it, ax.get_ylim()[0], f" {label}", rotation=90, va="bottom", fontsize=7, color="grey")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def save_figure(fig, path, **savefig) -> Path:
    """Save a figure atomically (format from the suffix) and close it."""
    from .io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig)
    _pyplot().close(fig)
    return path


def _save(fig, path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path)


def history_curves(history) -> dict:
    """The PSNR curves a History holds: true PSNR when a reference was given, and the fit."""
    curves = {}
    if any(v is not None for v in history.psnr):
        curves["PSNR vs reference"] = (history.iterations, history.psnr)
    curves["fit PSNR (observed pixels)"] = (history.iterations, history.fit_psnr)
    return curves


def history_marks(history) -> list:
    marks = [(r["iteration"], "guard") for r in history.recoveries]
    if history.early_stop:
        marks.append((history.early_stop["best_iteration"], "ES-WMV"))
    return marks


def plot_panel(images: Sequence[np.ndarray], titles: Sequence[str], path, columns: int | None = None,
               suptitle: str = "") -> Path:
    """Images side by side with titles (grayscale shown in gray)."""
    plt = _pyplot()
    n = len(images)
    columns = columns or n
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), dpi=110, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles):
        image = np.asarray(image)
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None,
                  vmin=0 if image.dtype.kind == "f" else None, vmax=1 if image.dtype.kind == "f" else None)
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save(fig, path)
