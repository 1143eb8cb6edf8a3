"""Writing result files, for the reproduction commands and the benchmarks alike.

Every file is written atomically (an interrupted run never leaves half a table), and tables,
cells and the environment lines have one home, so every report is formatted the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .errors import DIPError
from .io import write_text


def clean_json(value, digits: int = 7):
    """Round floats to ``digits`` significant digits, map NaN/inf to None, numpy to Python."""
    if isinstance(value, dict):
        return {str(k): clean_json(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v, digits) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}")
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist(), digits)
    if isinstance(value, Path):
        return str(value)
    return value


def write_text_atomic(path: Path, text: str) -> Path:
    return write_text(path, text)


def write_json(path: Path, data) -> Path:
    return write_text_atomic(path, json.dumps(clean_json(data), indent=1, allow_nan=False) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DIPError(f"could not read {path}: {exc}") from None


def write_markdown_and_json(folder: Path, stem: str, lines: list[str], record: dict) -> Path:
    """``<stem>.md`` (the lines) and ``<stem>.json`` (the record) in ``folder``; returns the
    Markdown's path."""
    markdown = folder / f"{stem}.md"
    write_text_atomic(markdown, "\n".join(lines))
    write_json(folder / f"{stem}.json", record)
    return markdown


def describe_environment(env: dict, devices: list[str], records=()) -> list[str]:
    """Header lines: device, libraries, commit, from the runs themselves.

    ``env``: the environment recorded when the results folder was created
    (used for units that do not carry their own); ``records``: the units.
    """
    envs = [r.get("environment") or env for r in records] or [env]

    def distinct(fn):
        values = []
        for e in envs:
            v = fn(e)
            if v not in values:
                values.append(v)
        return "; ".join(str(v) for v in values)

    def hardware(e):
        if e.get("gpu"):
            return e["gpu"]
        n = e.get("torch_threads")
        return f"{e.get('cpu')}, {n} torch thread{'' if n == 1 else 's'}"

    def commit(e):
        c = e.get("git_commit") or "unknown"
        return f"{c} (with uncommitted local changes)" if e.get("git_dirty") else c

    device = (f"Device: {', '.join(sorted(set(devices)))} ({distinct(hardware)})" if devices else
              f"Device: no DIP run yet; the baselines ran on {distinct(hardware)}")
    return [
        device,
        "Libraries: " + distinct(lambda e: f"python {e.get('python')}, torch {e.get('torch')}, numpy "
                                           f"{e.get('numpy')}, scikit-image {e.get('scikit-image')}, "
                                           f"napari-dip {e.get('napari-dip')}"),
        f"Commit of the runs (git HEAD recorded with each run): {distinct(commit)}",
    ]


def environment_bullets(env: dict, devices: list[str], records=()) -> list[str]:
    """:func:`describe_environment` as Markdown bullets, for the Run section of a report."""
    return [f"- {line}" for line in describe_environment(env, devices, records)]


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def fmt(value, digits: int = 2) -> str:
    """A table cell: ``digits`` decimals, or "n/a"."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_ms(mean, std, digits: int = 2) -> str:
    """A table cell "mean ± std" ("mean" alone without a spread, "n/a" without a mean)."""
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_csv(path: Path, headers: list[str], rows: list[list]) -> Path:
    """Floats with 4 decimals, None as an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for v in row])
    return write_text_atomic(path, buf.getvalue())


def config_block(config: dict) -> str:
    """A configuration as a fenced JSON block, in the order its fields were given."""
    return "```json\n" + json.dumps(clean_json(config), indent=1, sort_keys=False) + "\n```"
