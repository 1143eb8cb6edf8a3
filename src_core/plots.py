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


LEVEL_STYLES = ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)))


def draw_curves(ax, curves: dict, levels: Sequence = (), marks: Sequence[tuple[int, str]] = (),
                ylabel: str = "PSNR (dB)", legend: bool = True, fontsize: float = 7,
                styles: dict | None = None) -> None:
    """The one drawing of PSNR-type curves (files, reproduction figures and the widget).

    ``curves``: name -> (iterations, values), None values left as gaps;
    ``levels``: (value, name) horizontal lines (a classical method's PSNR);
    ``marks``: (iteration, name) vertical lines (guard recoveries, an early
    stop); ``styles``: name -> extra matplotlib line settings.
    """
    styles = styles or {}
    for name, (x, y) in curves.items():
        values = np.array([np.nan if v is None else v for v in y], dtype=float)
        ax.plot(x, values, label=name, **{"linewidth": 1.2, **styles.get(name, {})})
    for i, (value, name) in enumerate(levels):
        if value is not None:
            ax.axhline(value, color="black", linewidth=0.9, linestyle=LEVEL_STYLES[i % len(LEVEL_STYLES)],
                       label=f"{name} ({value:.2f})")
    for it, name in marks:
        ax.axvline(it, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f" {name}", (it, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=fontsize - 1, color="grey", va="bottom")
    ax.set_xlabel("iteration", fontsize=fontsize + 1)
    ax.set_ylabel(ylabel, fontsize=fontsize + 1)
    ax.tick_params(labelsize=fontsize)
    ax.grid(alpha=0.3)
    if legend and (len(curves) + len(levels)) > 1:
        ax.legend(fontsize=fontsize - 0.5, loc="lower right")


def plot_psnr_curves(curves: dict, path, title: str = "", ylabel: str = "PSNR (dB)",
                     marks: Sequence[tuple[int, str]] = ()) -> Path:
    """One line per entry of ``curves`` (see :func:`draw_curves`) as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    draw_curves(ax, curves, marks=marks, ylabel=ylabel, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
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
