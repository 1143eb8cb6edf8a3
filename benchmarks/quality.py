"""PSNR against CPU-seconds: napari-dip's default answer against the instant classical one.

    python benchmarks/quality.py --threads 2 -o docs/results/quality

Every case runs ``src_core`` the way a user does with no preset (the ``cpu`` preset on a
CPU; observed pixels kept; 5% of observed pixels held out; blend with the classical fill
for inpainting).  Every ``--every`` iterations the snapshot is turned into the answer the
user would get if the run stopped there, so each case gives a curve of answer PSNR (and
raw DIP PSNR, observed pixels kept) against CPU-seconds, beside the classical method's
PSNR and time.  Cases:

* ``t1-<name>-128``: Table 1's 11 images, 128x128 centre crops, 50% random pixels missing;
* ``t1-<name>-256``: the four Table 1 images that are 256x256 at full size;
* held out (never used to choose anything): Kate 256 with the paper's text mask (the
  README demo), scikit-image's camera 256 with a text mask, astronaut RGB 128 with 50%
  random missing;
* denoising: camera 256 with Gaussian noise sigma 15, 25 and 50 (of 255), coins sigma 25.

Each finished case is written at once to ``<out>/cases/<case>.json`` (atomically) and
skipped on a rerun; ``<out>/quality.md`` and the plots are remade from all cases.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src_core  # noqa: E402
from src_core.engine import Finished, History  # noqa: E402
from _report import command_line  # noqa: E402

TABLE1 = ("barbara", "boat", "house", "lena", "peppers", "cameraman", "couple", "fingerprint",
          "hill", "man", "montage")
NATIVE_256 = ("house", "peppers", "cameraman", "montage")


def _crop(a, size):
    h, w = a.shape[:2]
    return a[(h - size) // 2:(h + size) // 2, (w - size) // 2:(w + size) // 2]


def _half(a):
    from src_core.cli import _downscale2

    return _downscale2(a)


def cases() -> dict:
    """name -> (kind, group, builder); builders return (image, mask or None, reference)."""
    from skimage import data

    out = {}
    for name in TABLE1:
        out[f"t1-{name}-128"] = ("random", "Table 1, 128 crops", lambda n=name: (
            _crop(src_core.load_sample(f"table1/{n}.png"), 128), None, None))
    for name in NATIVE_256:
        out[f"t1-{name}-256"] = ("random", "Table 1, 256 full size", lambda n=name: (
            src_core.load_sample(f"table1/{n}.png"), None, None))

    def kate():
        img = _half(src_core.load_sample("dip/kate.png"))
        mask = _half(src_core.load_mask(src_core.data_path("dip/kate_mask.png")).astype(np.float32)) > 0.99
        return img, mask, img

    def camera_text():
        img = _half(data.camera())
        mask = src_core.text_mask(img.shape, [("Deep Image Prior", (8, 40), 30),
                                              ("napari 2026", (20, 150), 40)])
        return img, mask, img

    out["kate-text-256"] = ("inpaint", "held out", kate)
    out["camera-text-256"] = ("inpaint", "held out", camera_text)
    out["astronaut-rgb-128"] = ("random", "held out", lambda: (_half(_half(data.astronaut())), None, None))

    def noisy(image, sigma, seed=0):
        clean = image.astype(np.float32) / 255
        rng = np.random.default_rng(seed)
        return np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1).astype(np.float32), None, clean

    for sigma in (15, 25, 50):
        out[f"camera-noise{sigma}-256"] = ("denoise", "denoising", lambda s=sigma: noisy(_half(data.camera()), s))
    out["coins-noise25"] = ("denoise", "denoising", lambda: noisy(data.coins(), 25))
    return out


def run_case(name, kind, builder, every: int, iterations: int | None, settings: dict | None = None) -> dict:
    image, mask, reference = builder()
    overrides = {"device": "cpu", "snapshot_every": every, "report_every": every, **(settings or {})}
    if iterations:
        overrides["iterations"] = iterations
    t0 = time.process_time()
    problem = src_core.prepare(image, mask, task=kind, reference=reference, **overrides)
    classical_t0 = time.process_time()
    classical, _ = problem.classical_answer(0)
    classical_cpu = time.process_time() - classical_t0
    if problem.blends:
        problem.classical_answer(0, fitted_only=True)
    setup_cpu = time.process_time() - t0
    ref = problem.references[0]
    points, finished = [], None
    run = problem.run(0)
    for event in run:
        if event.kind == "progress" and event.output is not None:
            cpu = time.process_time() - t0
            fake = Finished(event.output, History(iterations=[], psnr=[]), event.iteration)
            answer = problem.answer(0, fake)
            points.append({"iteration": event.iteration, "cpu_s": cpu, "psnr_dip": event.psnr,
                           "psnr_answer": src_core.psnr_ssim(answer, ref, False)[0],
                           "alpha": fake.history.summary.get("blend_alpha")})
        if isinstance(event, Finished):
            finished = event
    final = problem.answer(0, finished)
    s = finished.history.summary
    h = finished.history
    return {"case": name, "task": kind, "shape": list(np.shape(image)), "preset": problem.config.preset,
            "settings": dict(settings or {}), "architecture": problem.config.network.architecture,
            "parameters": src_core.count_parameters(src_core.build_network(problem.config.network,
                                                                            problem.images.shape[1])),
            "iterations_run": h.timings["iterations"], "cpu_s": time.process_time() - t0,
            "wall_optimise_s": h.timings["optimise_s"], "setup_cpu_s": setup_cpu,
            "classical": problem.classical, "classical_cpu_s": classical_cpu,
            "psnr_corrupted": s["psnr_corrupted"], "psnr_classical": s["psnr_classical"],
            "psnr_answer": s["psnr_answer"], "psnr_dip_final": s["psnr_dip"],
            "blend_alpha": s.get("blend_alpha"), "answer_iteration": s.get("answer_iteration"),
            "early_stop": h.early_stop, "iterations_to_classical": s.get("iterations_to_classical"),
            "cpu_s_to_classical": next((p["cpu_s"] for p in points if p["psnr_answer"] >= s["psnr_classical"]), None),
            "points": points, "final_answer_check": src_core.psnr_ssim(final, ref, False)[0],
            "torch_threads": __import__("torch").get_num_threads()}


def _setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with the value read as JSON where it is (numbers, true/false), else a string."""
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _settings_lines(records: dict) -> list[str]:
    """What the runs set on top of the default (``--set``), and the network they ran."""
    first = records[next(iter(records))]
    if not first.get("settings"):
        return []
    weights = sorted({r["parameters"] for r in records.values() if "parameters" in r})
    return [f"**Settings on top of the default**: `{first['settings']}`: the {first['architecture']} "
            f"network ({weights[0]:,} to {weights[-1]:,} weights); the text below describes the "
            "default otherwise.", ""]


def _write_json(path: Path, data) -> None:
    from src_core.io import write_text

    write_text(path, json.dumps(data, indent=1))


def _counts(records: dict) -> list:
    """How often DIP alone reaches the classical answer (inpainting) or comes within 0.5 dB of it
    (denoising): the issue's goals, counted."""
    fills = [r for r in records.values() if r["task"] != "denoise"]
    noisy = [r for r in records.values() if r["task"] == "denoise"]
    reached = sum(r["psnr_dip_final"] >= r["psnr_classical"] for r in fills)
    close = sum(r["psnr_dip_final"] >= r["psnr_classical"] - 0.5 for r in noisy)
    return [f"DIP alone is at or above the classical answer on **{reached} of {len(fills)}** inpainting "
            f"cases and within 0.5 dB of it on **{close} of {len(noisy)}** denoising cases; the answer "
            f"is at or above it on {sum(r['psnr_answer'] >= r['psnr_classical'] - 0.005 for r in records.values())} "
            f"of {len(records)}."]


def report(out: Path, records: dict, command: str) -> None:
    from src_core.plots import _pyplot, save_figure

    rows = ["| case | task | corrupted | classical (CPU s) | DIP alone, final | **napari-dip answer** | "
            "answer - classical | CPU s | iterations "
            "| CPU s until the raw network output / the answer reach classical |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for name, r in records.items():
        diff = r["psnr_answer"] - r["psnr_classical"]
        groups.setdefault(r["group"], []).append(r)
        dip_reach = next((p["cpu_s"] for p in r["points"] if p["psnr_dip"] is not None
                          and p["psnr_dip"] >= r["psnr_classical"]), None)
        reach = " / ".join("never" if v is None else f"{v:.0f}" for v in (dip_reach, r["cpu_s_to_classical"]))
        rows.append(f"| {name} | {r['task']} | {r['psnr_corrupted']:.2f} | {r['classical']} {r['psnr_classical']:.2f} "
                    f"({r['classical_cpu_s']:.2f}) | {r['psnr_dip_final']:.2f} | **{r['psnr_answer']:.2f}** | "
                    f"{diff:+.2f} | {r['cpu_s']:.0f} | {r['iterations_run']} | {reach} |")
    means = ["| group | cases | classical | DIP alone | napari-dip answer | answer - classical | worst case |",
             "|---|---|---|---|---|---|---|"]
    for group, rs in groups.items():
        diffs = [r["psnr_answer"] - r["psnr_classical"] for r in rs]
        means.append(f"| {group} | {len(rs)} | {np.mean([r['psnr_classical'] for r in rs]):.2f} | "
                     f"{np.mean([r['psnr_dip_final'] for r in rs]):.2f} | "
                     f"**{np.mean([r['psnr_answer'] for r in rs]):.2f}** | "
                     f"{np.mean(diffs):+.2f} | {min(diffs):+.2f} |")
    env = f"torch {__import__('torch').__version__}, {records[next(iter(records))]['torch_threads']} threads, " \
          f"CPU: {_cpu()}"
    text = "\n".join([
        "# Quality at the default CPU budget: napari-dip against the instant classical answer", "",
        f"Made by `{command}` ({env}). PSNR in dB against the clean image, data range 1.", "",
        *_settings_lines(records),
        "Every run is the user's default: no preset and no iteration count (so the `cpu` preset on a "
        "CPU, 4 scales x 32 channels, with the count that fits the default time budget of 2 minutes "
        "per image at this machine's measured speed, at most 4 x 800: `src_core.budget`; the "
        "*iterations* column), observed pixels kept, 5% of the observed pixels held out to "
        "validate, and the answer is DIP's best-validated estimate blended with the classical answer "
        "(biharmonic for inpainting, non-local means for denoising) by the weight that fits the "
        "held-out pixels; the network's estimate is the running average of its outputs (EMA 0.95 "
        "for the fills, 0.99 for denoising, which adds early stopping on the held-out pixels). "
        "*DIP alone* is that estimate at the end with the observed pixels kept, no blend. "
        "*CPU s* is process CPU time (both threads), setup and classical included. The last column "
        "gives the CPU seconds until the network's raw output (observed pixels not kept, so it is "
        "below *DIP alone* where most pixels are observed, as with the text masks), and until the "
        "answer, first reach the classical PSNR (checked every 100 iterations; the answer leans on "
        "the classical one early, so it reaches it at the first check where the weight is well "
        "fitted).", "",
        "## Means by group", "", *means, "", *_counts(records), "", "## Every case", "", *rows, "",
        "Curves: `quality_curves.png` (answer PSNR and the raw network output's PSNR against CPU-seconds, the "
        "classical answer as a dashed line).", ""])
    from src_core.io import write_text

    write_text(out / "quality.md", text)
    plt = _pyplot()
    n = len(records)
    cols = 5
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.3 * cols, 2.6 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, r) in zip(axes.ravel(), records.items()):
        ax.axis("on")
        xs = [p["cpu_s"] for p in r["points"]]
        ax.plot(xs, [p["psnr_answer"] for p in r["points"]], label="napari-dip answer", lw=1.5)
        ax.plot(xs, [p["psnr_dip"] for p in r["points"]], label="network output", lw=1, alpha=0.7)
        ax.axhline(r["psnr_classical"], color="k", ls="--", lw=1, label=r["classical"])
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=6)
    fig.supxlabel("CPU seconds")
    fig.supylabel("PSNR (dB)")
    fig.tight_layout()
    save_figure(fig, out / "quality_curves.png", dpi=90)


def _cpu() -> str:
    from src_core.speed import cpu_name

    try:
        avx512 = "avx512f" in open("/proc/cpuinfo").read()
    except OSError:
        return cpu_name()
    return cpu_name() + (", AVX-512" if avx512 else ", AVX2 only")


def run_all(out: Path, todo: dict, only, run, said, report, command: str) -> None:
    """Each case of ``todo`` (name -> (kind, group, builder)) not in ``<out>/cases`` yet, run by
    ``run(name, kind, builder)`` and written at once (``said(name, record)`` printed); then
    ``report(out, records, command)`` remade from every finished case."""
    (out / "cases").mkdir(parents=True, exist_ok=True)
    for name, (kind, group, builder) in todo.items():
        path = out / "cases" / f"{name}.json"
        if (only and name not in only) or path.exists():
            continue
        record = run(name, kind, builder)
        record["group"] = group
        _write_json(path, record)
        print(said(name, record), flush=True)
    records = load_cases(out, list(todo))
    if records:
        report(out, records, command)


def load_cases(out: Path, order: list) -> dict:
    """Every finished case in ``<out>/cases``, in the order of ``order`` (others last)."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted((out / "cases").glob("*.json"))}
    return dict(sorted(records.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "docs" / "results" / "quality")
    parser.add_argument("--only", nargs="+", help="case names (default all)")
    parser.add_argument("--every", type=int, default=100, help="iterations between answer points")
    parser.add_argument("--iterations", type=int, help="override the preset's iterations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting on top of the default (e.g. architecture=decoder); repeatable")
    args = parser.parse_args(argv)
    settings = dict(_setting(text) for text in args.set)
    src_core.speed.choose_threads(args.threads)  # every run uses this count, not the free cores
    run_all(args.output_dir, cases(), args.only,
            lambda name, kind, builder: run_case(name, kind, builder, args.every, args.iterations, settings),
            lambda name, r: (f"{name}: corrupted {r['psnr_corrupted']:.2f}, {r['classical']} "
                             f"{r['psnr_classical']:.2f}, DIP {r['psnr_dip_final']:.2f}, answer "
                             f"{r['psnr_answer']:.2f} dB, {r['cpu_s']:.0f} CPU s"),
            report, command_line(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
