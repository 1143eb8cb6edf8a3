"""What the terminal shows of a run: its scores and notes, the files written, warnings on one line,
the engine's words in the command line's, and the exit status of a stopped run."""

from __future__ import annotations

import re
import sys

#: the exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130

#: the engine's words for a setting (it speaks Python) -> the command line's
CLI_TERMS = (
    (re.compile(r"\bpass channel_axis \(an axis number, or None for no channels\)"),
     "pass --channel-axis (an axis number, or none for no channels)"),
    (re.compile(r"\bchannel_axis\b"), "--channel-axis"),
    (re.compile(r"\bmissing_fraction\b"), "--fraction"),
    (re.compile(r"\(scales=(\d+)\)"), r"(--set scales=\1)"),
    (re.compile(r"\biterations=(\d+)"), r"--iterations \1"),
    (re.compile(r"give iterations= or a longer budget= \(CLI: (--iterations N, --budget 10min)\)"), r"give \1"),
    (re.compile(r"give iterations or a budget"), "give --iterations or --budget"),
    (re.compile(r"with task='inpaint'"), "with `dip inpaint`"),
    (re.compile(r"\(True = observed, False = missing\)"),
     "(in a mask file white = observed by default; --mask-observed black if yours is the other way)"),
)


def in_cli_terms(message: str) -> str:
    """An engine error or note in the command line's words (--channel-axis, not channel_axis)."""
    for pattern, words in CLI_TERMS:
        message = pattern.sub(words, message)
    return message


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as the CLI's other messages: one line, no source path or code."""
    print(f"dip: warning: {message}", file=file or sys.stderr, flush=True)


def note_lines(result) -> list[str]:
    """The run's notes (the problem's, then each slice's), which otherwise only the history file
    holds: why there is no blend, a fall the guard undid, a resumed run."""
    lines = [f"note: {n}" for n in result.notes]
    for index, h in enumerate(result.histories):
        where = f"slice {index if h.part is None else h.part}: " if len(result.histories) > 1 else ""
        lines += [f"note: {where}{n}" for n in h.notes if n not in result.notes]
    return [in_cli_terms(line) for line in dict.fromkeys(lines)]


def summary_lines(result) -> list[str]:
    """How the answer compares with the corrupted input and the classical method, per slice."""
    lines = []
    for index, h in enumerate(result.histories):
        s = h.summary
        where = f"slice {index if h.part is None else h.part}: " if len(result.histories) > 1 else ""
        method = s.get("classical_method")
        if s.get("psnr_answer") is not None:
            parts = [f"corrupted {s['psnr_corrupted']:.2f} dB"] if "psnr_corrupted" in s else []
            parts.append(f"DIP {s['psnr_dip']:.2f} dB")
            if method:
                parts.append(f"{method} {s['psnr_classical']:.2f} dB ({s['classical_seconds']:.2f} s)")
            parts.append(f"answer {s['psnr_answer']:.2f} dB")
            lines.append(where + "PSNR: " + ", ".join(parts))
        elif s.get("val_psnr_dip") is not None:
            parts = [f"held-out pixels ({s['held_out_pixels']}): DIP {s['val_psnr_dip']:.2f} dB"]
            if s.get("val_psnr_classical") is not None:
                parts.append(f"{method} {s['val_psnr_classical']:.2f} dB")
            lines.append(where + ", ".join(parts) + " (no reference given)")
        if s.get("blend_alpha") is not None:
            place = "in the holes" if s.get("keep_observed") else "everywhere"
            lines.append(where + f"answer = {s['blend_alpha']:.2f} x DIP + {1 - s['blend_alpha']:.2f} x "
                         f"{method} {place} (weights fitted on the held-out pixels)")
        if s.get("restarts"):
            members = s.get("psnr_dip_members")
            each = f" (each alone {min(members):.2f} to {max(members):.2f} dB)" if members else ""
            lines.append(where + f"DIP is the mean of {s['restarts']} restarts{each}; their spread shows "
                         "where the fill is uncertain")
        if s.get("verdict"):
            lines.append(where + in_cli_terms(s["verdict"]))
        if s.get("keep_observed"):
            lines.append(where + "observed pixels kept as they were (--no-keep-observed to change)")
    return lines


def print_run_report(done: str, lines, written: dict) -> None:
    """The end of every task run, tiled or not: how long it took, its scores and notes, its files."""
    print(done)
    for line in lines:
        print(f"  {line}")
    for kind, path in written.items():
        print(f"  {kind:10s} {path}")
