"""Plots of the reproduction commands (matplotlib, Agg, no display needed).

Every figure carries the setting label in a footer, so a PNG taken out of
its folder still says whether it shows the paper's setting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plots import _pyplot, draw_curves, save_figure


def _footer(fig, label: str) -> None:
    if label:
        fig.text(0.5, 0.005, label, ha="center", va="bottom", fontsize=6.5, color="dimgray", wrap=True)


def _bottom(fig, label: str) -> float:
    """Figure fraction to leave free under the axes for the wrapped footer."""
    width_chars = fig.get_figwidth() * 20  # about 20 characters of 6.5 pt text per inch
    lines = max(1, -(-len(label) // int(width_chars))) if label else 0
    return min(0.3, (0.012 + 0.024 * lines) * 4.4 / fig.get_figheight())


def _values(y):
    return np.array([np.nan if v is None else v for v in y], dtype=float)


def plot_curves(curves: dict, path, title: str, label: str, levels=(), vlines=(),
                ylabel: str = "PSNR (dB)", ylim=None) -> Path:
    """name -> (iterations, values) lines, with horizontal reference levels (value, name) and
    vertical marks (iteration, name)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    draw_curves(ax, curves, levels, vlines, ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    fig.tight_layout(rect=(0, _bottom(fig, label), 1, 1))
    _footer(fig, label)
    return save_figure(fig, path)


def plot_curve_grid(panels: dict, path, title: str, label: str, columns: int = 4) -> Path:
    """One small curve plot per entry: name -> dict(curves=..., levels=...)."""
    plt = _pyplot()
    n = len(panels)
    columns = min(columns, max(n, 1))
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.6 * rows + 0.6), dpi=100,
                             squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (name, panel) in zip(axes.ravel(), panels.items()):
        draw_curves(ax, panel["curves"], panel.get("levels", ()), (), legend=False, fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("")
    if n:
        handles, names = axes.ravel()[0].get_legend_handles_labels()
        fig.legend(handles, [nm.split(" (")[0] for nm in names], fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, _bottom(fig, label), 0.86, 0.97))
    _footer(fig, label)
    return save_figure(fig, path)


def plot_xy(series: dict, path, title: str, xlabel: str, label: str, ylabel: str = "PSNR (dB)",
            logx: bool = False, xticks=None) -> Path:
    """name -> (x, y) as lines with markers (sweeps)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=110)
    for i, (name, (x, y)) in enumerate(series.items()):
        oracle = "ORACLE" in name
        ax.plot(x, _values(y), marker="x" if oracle else "o", linestyle="--" if oracle else "-",
                linewidth=1.0 if oracle else 1.4, label=name, color=f"C{i if not oracle else i - 2}"
                if len(series) == 4 else None)
    if logx:
        ax.set_xscale("log", base=2)
    if xticks is not None:
        ax.set_xticks(list(xticks))
        ax.set_xticklabels([str(t) for t in xticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, _bottom(fig, label), 1, 1))
    _footer(fig, label)
    return save_figure(fig, path)


def _show(ax, chw: np.ndarray, title: str, fontsize: float = 9) -> None:
    img = np.clip(np.asarray(chw, dtype=np.float32), 0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.moveaxis(img, 0, -1), interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def plot_image_rows(rows: list, path, title: str, label: str, row_titles=None) -> Path:
    """A grid of images, one list of (chw, title) per row, like the paper's figure panels."""
    plt = _pyplot()
    columns = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.1 * columns, 3.35 * len(rows) + 0.5),
                             dpi=110, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (chw, name) in enumerate(row):
            _show(axes[r, c], chw, name)
        if row_titles:
            axes[r, 0].text(-0.04, 0.5, row_titles[r], transform=axes[r, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0.01, _bottom(fig, label), 1, 0.97))
    _footer(fig, label)
    return save_figure(fig, path)
