"""Time to quality: DIP's PSNR against CPU-seconds, this tree beside a baseline commit's.

    python benchmarks/time_to_quality.py --baseline 7dbf63c -o docs/results/time_to_quality
    python benchmarks/time_to_quality.py --only brick-random --set lr=0.02 -o /tmp/ttq

Cases the project never tuned on (textures, microscopy, photos from scikit-image, grey, 2x
box-downscaled and cut to 128x128), each with 50% random pixels missing and with 8x8 block
holes (a quarter of the blocks).  Each case runs in its own processes, one thread each, two
at once: the baseline commit's ``src_core`` (``git archive`` into a temporary folder, imported
there; its curves are cached per case, since ``--set`` does not change them) and this tree's,
with the default settings (no preset: ``cpu`` on a CPU) and ``--set`` on top for this tree.
Every ``--every`` iterations the network's output (observed pixels kept) is scored against
the clean image, with the process's CPU time.  A case's *speed-up* is the
baseline's CPU time to its best PSNR over this tree's time to that PSNR; *4x* says whether
this tree, at a quarter of the baseline's CPU time, is at least at the baseline's best.
Each finished case is written at once to ``<out>/cases/<case>.json`` and skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("brick", "grass", "gravel", "moon", "cell", "immunohistochemistry", "coffee", "chelsea")
KINDS = {"brick": "texture", "grass": "texture", "gravel": "texture", "moon": "photo", "cell": "microscopy",
         "immunohistochemistry": "microscopy", "coffee": "photo", "chelsea": "photo"}
HOLES = ("random", "blocks")


def case_names() -> list[str]:
    return [f"{image}-{holes}" for image in IMAGES for holes in HOLES]


def build_case(name: str):
    """(clean image in [0, 1], observed mask) of a case; numpy and scikit-image only, so both
    trees get the same arrays."""
    from skimage import data
    from skimage.color import rgb2gray

    image_name, holes = name.rsplit("-", 1)
    image = getattr(data, image_name)()
    image = rgb2gray(image) if image.ndim == 3 else image / 255.0
    h, w = (s // 2 * 2 for s in image.shape)
    image = image[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    top, left = (image.shape[0] - 128) // 2, (image.shape[1] - 128) // 2
    clean = np.ascontiguousarray(image[top:top + 128, left:left + 128], dtype=np.float32)
    rng = np.random.default_rng(sum(map(ord, name)))  # the same holes on every machine and run
    if holes == "random":
        observed = rng.random(clean.shape) >= 0.5
    else:
        blocks = rng.random((16, 16)) >= 0.25
        observed = np.kron(blocks, np.ones((8, 8), bool))
    return clean, observed


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    mse = float(np.mean((np.clip(estimate, 0, 1).astype(np.float64) - clean) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def worker(tree: str, name: str, settings: dict, every: int) -> dict:
    """One case on one tree, one thread: the curve of (iteration, CPU s, PSNR)."""
    sys.path.insert(0, tree)
    import torch

    torch.set_num_threads(1)
    import src_core

    clean, observed = build_case(name)
    settings = dict(settings)
    schedule = settings.pop("lr_schedule", None)  # levers measured here, not engine settings
    coarse = settings.pop("coarse_to_fine", 0)
    t0 = time.process_time()
    points, start = [], None
    if coarse:
        start = _coarse_fit(src_core, clean, observed, coarse, every, settings, points, t0)
        settings["warm_start"] = 1.0  # the full-size fit runs all its iterations from those weights
    problem = src_core.prepare(clean * observed, observed, task="inpaint", classical=None, device="cpu",
                               threads=1, snapshot_every=every, report_every=every, **settings)
    if schedule:
        _schedule_adam(torch, schedule, problem.config.iterations)
    for event in (problem.run(0) if start is None else problem.run(0, start=start)):  # the baseline has no start
        if getattr(event, "kind", None) == "progress" and event.output is not None:
            out = np.asarray(event.output, dtype=np.float32)[0]
            points.append([event.iteration + coarse, time.process_time() - t0,
                           psnr(np.where(observed, clean, out), clean)])
    config = problem.config
    return {"tree": tree, "case": name, "settings": settings, "iterations": config.iterations,
            "network": config.network.to_dict(), "lr": config.lr, "sigma_p": config.sigma_p,
            "points": points, "cpu_s": time.process_time() - t0, "src_core": src_core.__file__}


def _coarse_fit(src_core, clean, observed, iterations: int, every: int, settings: dict, points: list, t0: float):
    """The coarse-to-fine lever: ``iterations`` on the half-size problem (each 2x2 block the mean
    of its observed pixels, observed if any is), then the full-size run starts from those weights
    with the coarse input code enlarged by repetition (the loop's ``make_input`` is replaced for
    this process only).  The coarse outputs are scored enlarged bilinearly, observed pixels kept."""
    from skimage.transform import resize

    from src_core.engine import loop

    h, w = clean.shape
    blocks = (observed * clean).reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    count = observed.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    small_mask = count > 0
    small = np.where(small_mask, blocks / np.maximum(count, 1), 0).astype(np.float32)
    drawn = []
    original = loop.make_input

    def record(*args, **kwargs):
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    loop.make_input = record
    problem = src_core.prepare(small, small_mask, task="inpaint", classical=None, device="cpu", threads=1,
                               snapshot_every=every, report_every=every, **{**settings, "iterations": iterations})
    weights = None
    for event in problem.run(0):
        if getattr(event, "kind", None) == "progress" and event.output is not None:
            out = resize(np.asarray(event.output, dtype=np.float32)[0], (h, w), order=1)
            points.append([event.iteration, time.process_time() - t0, psnr(np.where(observed, clean, out), clean)])
        weights = getattr(event, "weights", weights)
    z = drawn[-1]
    loop.make_input = lambda *args, **kwargs: z.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert weights is not None, "the coarse run gave no weights"
    return weights


def _schedule_adam(torch, schedule: str, iterations: int) -> None:
    """The learning-rate lever: ``cosine:PEAK:WARMUP[:END]`` rises linearly to PEAK over WARMUP
    iterations and falls as a cosine to END (default 0) at the run's last iteration.  Adam is
    replaced for this process only, so the engine's loop is measured as it is."""
    import math

    _, peak, warmup, *rest = schedule.split(":")
    peak, warmup, end = float(peak), int(warmup), float(rest[0]) if rest else 0.0

    def lr_at(step: int) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        t = (step - warmup) / max(1, iterations - warmup)
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    base = torch.optim.Adam

    class ScheduledAdam(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._lever_step = 0

            def before(optimizer, _args, _kwargs):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(optimizer._lever_step)
                optimizer._lever_step += 1

            self.register_step_pre_hook(before)

    torch.optim.Adam = ScheduledAdam


#: a curve within this of a level has reached it (two runs of the same code differ by rounding)
REACHED_DB = 0.01


def reached(points, level: float):
    """The CPU time at which a curve first reaches ``level`` (None: never)."""
    return next((t for _, t, p in points if p >= level - REACHED_DB), None)


def best_within(points, seconds: float):
    values = [p for _, t, p in points if t <= seconds]
    return max(values) if values else None


def compare(base: dict, new: dict) -> dict:
    """The speed-up at the baseline's best PSNR, and the 4x check at a quarter of its time."""
    b, n = base["points"], new["points"]
    best = max(p for _, _, p in b)
    t_base = reached(b, best)
    t_new = reached(n, best)
    quarter = base["cpu_s"] / 4
    at_quarter = best_within(n, quarter)
    return {"baseline_best": best, "baseline_s_to_best": t_base, "new_s_to_best": t_new,
            "speedup": None if t_new is None else t_base / t_new, "new_best": max(p for _, _, p in n),
            "new_at_quarter": at_quarter, "four_x": at_quarter is not None and at_quarter >= best - REACHED_DB,
            "baseline_cpu_s": base["cpu_s"], "new_cpu_s": new["cpu_s"]}


def run_worker(tree: str, name: str, settings: dict, every: int) -> dict:
    """One case on one tree in its own process (so each tree imports its own src_core)."""
    cmd = [sys.executable, __file__, "--worker", tree, name, json.dumps(settings), str(every)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {name} on {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_cases(names, tree: str, cache: Path, settings: dict, every: int, parallel: int):
    """Yield each case's record as it finishes: the baseline's curve (cached per commit and case:
    it does not depend on ``--set``) and this tree's, ``parallel`` processes of one thread at once."""
    from concurrent.futures import ThreadPoolExecutor

    from src_core.reports import write_json

    cache.mkdir(parents=True, exist_ok=True)

    def baseline(name):
        path = cache / f"{name}-every{every}.json"
        if path.exists():
            return json.loads(path.read_text())
        result = run_worker(tree, name, {}, every)
        write_json(path, result)
        return result

    with ThreadPoolExecutor(parallel) as pool:
        jobs = [(name, pool.submit(baseline, name), pool.submit(run_worker, str(ROOT), name, settings, every))
                for name in names]
        for name, base, new in jobs:
            base, new = base.result(), new.result()
            yield {"case": name, "kind": KINDS[name.rsplit("-", 1)[0]], "holes": name.rsplit("-", 1)[1],
                   "baseline": base, "new": new, **compare(base, new)}


def baseline_tree(commit: str) -> str:
    """``commit``'s src_core, extracted once into a temporary folder."""
    folder = Path(tempfile.gettempdir()) / f"napari-dip-{commit}"
    if not (folder / "src_core" / "__init__.py").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src_core"], check=True,
                                 capture_output=True).stdout
        import io

        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder)
    return str(folder)


def report(out: Path, records: list, command: str, commit: str, settings: dict) -> None:
    sys.path.insert(0, str(ROOT))
    from src_core.reports import md_table, write_text_atomic

    rows = []
    for r in records:
        rows.append([r["case"], r["kind"], f"{r['baseline_best']:.2f}", f"{r['baseline_s_to_best']:.0f}",
                     f"{r['new_best']:.2f}", "never" if r["new_s_to_best"] is None else f"{r['new_s_to_best']:.0f}",
                     "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                     "-" if r["new_at_quarter"] is None else f"{r['new_at_quarter']:.2f}",
                     "yes" if r["four_x"] else "no"])
    speedups = [r["speedup"] for r in records if r["speedup"] is not None]
    gmean = float(np.exp(np.mean(np.log(speedups)))) if speedups else None
    lines = [
        "# Time to quality: this tree against the baseline, PSNR against CPU-seconds", "",
        f"Made by `{command}`: baseline `{commit}`, this tree with `{settings or 'the default'}`; one "
        "thread each, the two processes at once. PSNR (dB) of the network's output with the observed "
        "pixels kept, against the clean image. *s to best*: CPU seconds until the curve first reaches "
        "the baseline's best PSNR. *at 1/4*: this tree's best PSNR within a quarter of the baseline's "
        "CPU time; *4x*: that is at least the baseline's best.", "",
        md_table(["case", "kind", "baseline best", "s to best", "this tree best", "s to baseline best",
                  "speed-up", "at 1/4", "4x"], rows), "",
        f"Geometric mean speed-up: **{gmean:.2f}x** over {len(speedups)} of {len(records)} cases "
        f"(the others never reached the baseline's best); 4x on {sum(r['four_x'] for r in records)} "
        f"of {len(records)}." if gmean else "No case reached the baseline's best.", "",
        "Curves: `curves.png`.", ""]
    write_text_atomic(out / "README.md", "\n".join(lines))
    _plot(out, records)


def _plot(out: Path, records: list) -> None:
    sys.path.insert(0, str(ROOT))
    from src_core.plots import _pyplot, save_figure

    plt = _pyplot()
    cols = 4
    rows = -(-len(records) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, r in zip(axes.ravel(), records):
        for side, style in (("baseline", "k-"), ("new", "C1-")):
            pts = np.array(r[side]["points"])
            ax.plot(pts[:, 1], pts[:, 2], style, lw=1, label=side)
        ax.set_title(r["case"], fontsize=9)
        ax.set_xlabel("CPU s")
        ax.set_ylabel("PSNR (dB)")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(records):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, out / "curves.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "docs" / "results" / "time_to_quality")
    parser.add_argument("--baseline", default="7dbf63c", help="the commit to compare with")
    parser.add_argument("--only", nargs="+", help=f"case names (default all: {', '.join(case_names())})")
    parser.add_argument("--every", type=int, default=25, help="iterations between PSNR points")
    parser.add_argument("--parallel", type=int, default=2, help="processes at once (one thread each)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for this tree on top of the default; repeatable")
    args = parser.parse_args(argv)
    settings = {}
    for text in args.set:
        key, _, value = text.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    tree = baseline_tree(args.baseline)
    out = args.output_dir
    (out / "cases").mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import command_line

    command = command_line(__file__, argv)
    sys.path.insert(0, str(ROOT))
    from src_core.reports import write_json

    todo = [name for name in args.only or case_names() if not (out / "cases" / f"{name}.json").exists()]
    cache = Path(tempfile.gettempdir()) / f"napari-dip-{args.baseline}-curves"
    for record in run_cases(todo, tree, cache, settings, args.every, args.parallel):
        name = record["case"]
        write_json(out / "cases" / f"{name}.json", record)
        speedup = "never" if record["speedup"] is None else f"{record['speedup']:.2f}x"
        print(f"{name}: baseline best {record['baseline_best']:.2f} dB in {record['baseline_s_to_best']:.0f} s; "
              f"this tree {record['new_best']:.2f} dB, speed-up {speedup}", flush=True)
    order = case_names()
    records = [json.loads(p.read_text()) for p in (out / "cases").glob("*.json")]
    records = [{**r, **compare(r["baseline"], r["new"])} for r in records]  # with today's rule
    records.sort(key=lambda r: order.index(r["case"]) if r["case"] in order else 99)
    if records:
        report(out, records, command, args.baseline, settings)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, tree, name, settings, every = sys.argv
        print(json.dumps(worker(tree, name, json.loads(settings), int(every))))
        sys.exit(0)
    sys.exit(main())
