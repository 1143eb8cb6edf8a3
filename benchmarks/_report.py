"""What the benchmarks' reports share: the command that made them, and how they are written."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src_core.reports import write_json, write_text_atomic  # noqa: E402


def command_line(script: str, argv=None) -> str:
    """``python benchmarks/<script> <arguments>``: the exact call, recorded beside its figures."""
    return f"python benchmarks/{Path(script).name} " + " ".join(sys.argv[1:] if argv is None else argv)


def write_report(out: Path, stem: str, lines: list[str], record: dict) -> None:
    """``<stem>.md`` (the lines) and ``<stem>.json`` (the record) in ``out``, written atomically,
    and the lines printed."""
    write_text_atomic(out / f"{stem}.md", "\n".join(lines))
    write_json(out / f"{stem}.json", record)
    print("\n".join(lines))
