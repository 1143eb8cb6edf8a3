"""The PSNR curves of a run: the widget's live plot and the image written at the end.

Matplotlib only (Agg for images; the widget hands in its own Qt figure), in
napari's dark theme so the plot sits well in the viewer.
"""

from __future__ import annotations

import numpy as np

from src_core.plots import draw_curves as draw_curves_on

BACKGROUND, FOREGROUND = "#262930", "#d0d4dc"  # napari's dark theme


def _dark_axes(fig, ax) -> None:
    """napari's dark theme colours, so the plot sits well in the viewer."""
    fig.patch.set_facecolor(BACKGROUND)
    ax.set_facecolor(BACKGROUND)
    for spine in ax.spines.values():
        spine.set_color("#5a626c")
    ax.tick_params(colors=FOREGROUND, labelsize=7)
    ax.xaxis.label.set_color(FOREGROUND)
    ax.yaxis.label.set_color(FOREGROUND)
    ax.title.set_color(FOREGROUND)
    ax.grid(alpha=0.25)


def draw_curves(fig, ax, curves: list, title: str = "") -> None:
    """Draw PSNR curves, one entry per slice: (label, iterations, psnr list, fit list).

    With a reference (any psnr value not None) the true PSNR is the solid line
    and the fit on observed pixels is dashed; without one only the fit is drawn.
    """
    ax.clear()
    has_ref = any(any(v is not None for v in psnr) for _, _, psnr, _ in curves)
    lines, styles = {}, {}
    for i, (label, its, psnr, fit) in enumerate(curves):
        suffix = f" {label}" if label else ""
        colour = f"C{i % 10}"
        if has_ref:
            lines[f"PSNR vs reference{suffix}"] = (its, psnr)
            lines[f"fit (observed){suffix}"] = (its, fit)
            styles[f"PSNR vs reference{suffix}"] = {"linewidth": 1.4, "color": colour}
            styles[f"fit (observed){suffix}"] = {"linewidth": 0.9, "linestyle": "--", "color": colour,
                                                 "alpha": 0.6}
        else:
            lines[f"fit PSNR (observed pixels){suffix}"] = (its, fit)
            styles[f"fit PSNR (observed pixels){suffix}"] = {"linewidth": 1.4, "color": colour}
    draw_curves_on(ax, lines, legend=False, styles=styles)
    if title:
        ax.set_title(title, fontsize=8)
    _dark_axes(fig, ax)
    if any(len(c[1]) for c in curves) and len(curves) <= 4:
        ax.legend(fontsize=6, loc="lower right", facecolor=BACKGROUND, edgecolor="#5a626c",
                  labelcolor=FOREGROUND, framealpha=0.6)


class LiveCurves:
    """The widget's PSNR plot, redrawn incrementally: new points move the existing lines.

    Clearing and rebuilding the axes (and their layout) at every update took
    most of the main thread's time per update; only a change in the set of
    curves (a new slice, the first reference value) rebuilds them now.
    """

    def __init__(self, fig, ax):
        self.fig, self.ax = fig, ax
        self.shape = None
        self.lines: list = []

    def update(self, curves: list) -> None:
        has_ref = any(any(v is not None for v in psnr) for _, _, psnr, _ in curves)
        shape = (has_ref, tuple(label for label, *_ in curves))
        if shape != self.shape:
            draw_curves(self.fig, self.ax, curves)
            try:
                self.fig.tight_layout()
            except Exception:  # tight_layout may fail on a tiny canvas; the plot is still fine
                pass
            self.shape, self.lines = shape, list(self.ax.get_lines())
            return
        series = []
        for _, its, psnr, fit in curves:
            if has_ref:
                series.append((its, [np.nan if v is None else v for v in psnr]))
            series.append((its, fit))
        for line, (x, y) in zip(self.lines, series):
            line.set_data(x, y)
        self.ax.relim()
        self.ax.autoscale_view()


def render_curves(curves: list, title: str = "", size=(4.0, 3.0), dpi=100) -> np.ndarray:
    """The curves as an RGB uint8 image (Agg, no display and no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    draw_curves(fig, ax, curves, title)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
