"""Side-by-side speed and quality: a loop like the original code against the engine's default path.

    python benchmarks/fast_path.py                      # CPU: 128 and 256, writes docs/benchmarks.md
    python benchmarks/fast_path.py --sizes 256 512      # on a GPU

In one process, on one machine, with fixed seeds and one fixed 50%-missing
problem (House from Table 1, resized), the standard network (5 scales,
128/128/4, bilinear, the Table 1 settings) is run by

(a) ``reference``: a loop that behaves like the original code: float32,
    default memory format, eager, BatchNorm with running statistics, and the
    output copied to the host with PSNR computed every iteration;
(b) ``engine``: ``src_core.DIPRun`` with its default ("auto") fast path.

It reports seconds per iteration and their ratio, then a quality guard (final
PSNR of both over several seeds: the fast path must stay within 0.1 dB of the
float32 reference, or it must not be the default), batched-run throughput
against sequential runs, and what happens with a 2048x2048 input.  On a GPU
it also reports achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode)
and peak memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import resize

import src_core
from src_core import DIPEnsemble, DIPError, DIPRun, bernoulli_mask, preset
from src_core.engine import make_input
from src_core.network import build_network
from _report import command_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def problem(size: int):
    """House resized to size x size, 50% of pixels missing (mask seed 0)."""
    clean = src_core.load_sample("table1/house.png").astype(np.float32) / 255.0
    clean = resize(clean, (size, size), anti_aliasing=True).astype(np.float32)[None]
    return clean, bernoulli_mask((size, size), 0.5, seed=0)[None]


def reference_loop(clean, mask, cfg, iterations: int, device, timing_from: int | None = None):
    """The original code's loop: float32, NCHW, eager, host copy + PSNR every iteration.

    Returns (final PSNR, wall seconds per iteration after ``timing_from`` iterations,
    process CPU seconds per iteration over the same span).
    """
    c, h, w = clean.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build_network(cfg.network, output_channels=c)
    for name, module in list(net.named_modules()):  # the original's BatchNorm keeps running stats
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(module, child_name, torch.nn.BatchNorm2d(child.num_features))
    net = net.to(device)
    z = make_input(cfg.input_kind, cfg.network.input_channels, h, w, cfg.input_scale,
                   torch.Generator().manual_seed(cfg.seed)).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    noise = torch.empty_like(z)
    m = torch.from_numpy(mask.astype(np.float32))[None].to(device)
    target = torch.from_numpy(clean)[None].to(device) * m
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    mse = torch.nn.MSELoss()
    saved = [p.detach().clone() for p in net.parameters()]
    last_fit = None
    observed = float(mask.mean())
    psnr = float("nan")
    t_start = None
    for it in range(1, iterations + 1):
        if timing_from is not None and it == timing_from + 1:
            _sync(device)
            t_start, c_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        noise[0].normal_(generator=gen)
        out = net(z + noise * cfg.sigma_p)
        loss = mse(out * m, target)
        loss.backward()
        out_np = out.detach().cpu().numpy()[0]                       # host copy, every iteration
        psnr = peak_signal_noise_ratio(clean, np.clip(out_np, 0, 1), data_range=1.0)
        _ = f"Iteration {it:05d}    Loss {loss.item():f}   PSNR_gt: {psnr:f}"  # the original's print line
        if it % cfg.guard_every == 0:  # the Barbara notebook's backtracking guard
            fit = -10 * np.log10(loss.item() / observed)
            if last_fit is not None and fit < last_fit - cfg.guard_drop_db:
                with torch.no_grad():
                    for p, s in zip(net.parameters(), saved):
                        p.copy_(s)
                for p in net.parameters():
                    p.grad.zero_()
            else:
                saved = [p.detach().clone() for p in net.parameters()]
                last_fit = fit
        optimizer.step()
    _sync(device)
    if t_start is None:
        return psnr, float("nan"), float("nan")
    n = iterations - timing_from
    return psnr, (time.perf_counter() - t_start) / n, (time.process_time() - c_start) / n


def engine_run(clean, mask, cfg, iterations: int, timing_from: int | None = None):
    """The engine's default path; seconds per iteration measured between two reports."""
    report = timing_from or iterations
    run_cfg = cfg.replace(iterations=iterations, report_every=report)
    stamps, cpu = {}, {}
    finished = None
    for event in DIPRun(clean, mask, run_cfg, reference=clean):
        if event.kind == "progress":
            stamps[event.iteration] = event.elapsed  # each report syncs (loss.item())
            cpu[event.iteration] = time.process_time()
        finished = event
    per_it = cpu_it = float("nan")
    if timing_from:
        n = iterations - timing_from
        per_it = (stamps[iterations] - stamps[timing_from]) / n
        cpu_it = (cpu[iterations] - cpu[timing_from]) / n
    return finished.history.final_psnr, per_it, cpu_it, finished.history.fast_path


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_iteration(cfg, size: int) -> float:
    """Forward + backward FLOPs of one iteration, counted by torch (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = build_network(cfg.network, 1)
    z = torch.rand(1, cfg.network.input_channels, size, size)
    with FlopCounterMode(display=False) as counter:
        net(z).mean().backward()
    return float(counter.get_total_flops())


def speed_rows(sizes, cfg, device, iterations, warmup, rounds=3):
    """Reference and engine timed in alternation, ``rounds`` times each, after one untimed pair.

    Timing the reference first and cold, then the engine, inflated the
    speed-up by about 20% (x1.36 against x1.10 interleaved on an AVX2 CPU):
    the first runs pay for warming caches, the allocator and the thread pool.
    Here an untimed pair warms up both, the order alternates, and the
    median of each is reported, with process CPU time beside wall time.
    """
    rows = []
    for size in sizes:
        clean, mask = problem(size)
        reference_loop(clean, mask, cfg, warmup + 2, device, timing_from=warmup)  # warm-up pair
        engine_run(clean, mask, cfg, warmup + 2, timing_from=warmup)
        ref_wall, ref_cpu, fast_wall, fast_cpu, ref_mem, fast_mem = [], [], [], [], None, None
        fast_path = None
        for r in range(rounds):
            for which in (("reference", "engine") if r % 2 == 0 else ("engine", "reference")):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                if which == "reference":
                    _, wall, cpu = reference_loop(clean, mask, cfg, warmup + iterations, device,
                                                  timing_from=warmup)
                    ref_wall.append(wall), ref_cpu.append(cpu)
                    if device.type == "cuda":
                        ref_mem = torch.cuda.max_memory_allocated(device)
                else:
                    _, wall, cpu, fast_path = engine_run(clean, mask, cfg, warmup + iterations,
                                                         timing_from=warmup)
                    fast_wall.append(wall), fast_cpu.append(cpu)
                    if device.type == "cuda":
                        fast_mem = torch.cuda.max_memory_allocated(device)
        ref, fast = float(np.median(ref_wall)), float(np.median(fast_wall))
        row = {"size": size, "reference_s": ref, "engine_s": fast, "ratio": ref / fast,
               "reference_cpu_s": float(np.median(ref_cpu)), "engine_cpu_s": float(np.median(fast_cpu)),
               "rounds": rounds, "fast_path": fast_path}
        if device.type == "cuda":
            flops = flops_per_iteration(cfg, size)
            row.update(gflop=flops / 1e9, reference_tflops=flops / ref / 1e12,
                       engine_tflops=flops / fast / 1e12, reference_peak_gib=ref_mem / 2**30,
                       engine_peak_gib=fast_mem / 2**30)
        rows.append(row)
        print(f"  {size}x{size}: reference {ref:.4f} s/it ({row['reference_cpu_s']:.4f} CPU-s), engine "
              f"{fast:.4f} s/it ({row['engine_cpu_s']:.4f} CPU-s), x{ref / fast:.2f} "
              f"(medians of {rounds} interleaved rounds)", flush=True)
    return rows


def bf16_hardware() -> str:
    """Whether this CPU has the instructions that make bf16 autocast pay (AVX512-BF16 or AMX)."""
    if src_core.speed.cpu_has_native_bf16():
        return "AVX512-BF16 or AMX"
    return "neither AVX512-BF16 nor AMX (bf16 would be emulated: slower)"


def quality_rows(size, cfg, device, iterations, seeds):
    clean, mask = problem(size)
    rows = []
    for seed in seeds:
        c = cfg.replace(seed=seed)
        ref, _, _ = reference_loop(clean, mask, c, iterations, device)
        fast, _, _, _ = engine_run(clean, mask, c, iterations)
        rows.append({"seed": seed, "reference_psnr": ref, "engine_psnr": fast})
        print(f"  seed {seed}: reference {ref:.2f} dB, engine {fast:.2f} dB", flush=True)
    return rows


def batch_row(size, cfg, members, iterations, strategy="auto"):
    clean, mask = problem(size)
    c = cfg.replace(iterations=iterations, report_every=iterations)
    t0 = time.perf_counter()
    for k in range(members):
        DIPRun(clean, mask, c.replace(seed=c.seed + k)).run()
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = DIPEnsemble(np.repeat(clean[None], members, 0), mask, c, strategy=strategy)
    batch.run()
    batched = time.perf_counter() - t0
    work = members * iterations
    row = {"size": size, "members": members, "iterations": iterations, "strategy": batch.strategy,
           "sequential_img_it_per_s": work / sequential, "batched_img_it_per_s": work / batched}
    print(f"  {members} x {size}x{size} ({batch.strategy}): sequential {work / sequential:.2f}, batched "
          f"{work / batched:.2f} image-iterations/s", flush=True)
    return row


def big_image_row(cfg):
    size = 2048
    image = np.zeros((1, size, size), np.float32)
    try:
        run = DIPRun(image, None, cfg.replace(iterations=3, report_every=3))
    except DIPError as exc:
        return {"size": size, "outcome": f"refused before starting: {exc}"}
    t0 = time.perf_counter()
    run.run()
    return {"size": size, "outcome": f"ran 3 iterations in {time.perf_counter() - t0:.1f} s "
                                     f"(needs about {run.memory_needed / 2**30:.1f} GiB)"}


def machine_line(device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        from src_core.speed import cpu_name

        name = f"{cpu_name()}, {torch.get_num_threads()} threads"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return (f"{name}; torch {torch.__version__}; numpy {np.__version__}; python "
            f"{platform.python_version()}; src_core {src_core.__version__}; commit {commit}")


def markdown(report) -> str:
    dev = report["device"]
    lines = [f"## Fast path on {dev} ({report['date']})", "",
             f"Machine: {report['machine']}.  ", f"Command: `{report['command']}`", "",
             "Standard network (5 scales, 128/128/4, bilinear), Table 1 settings (Adam, lr 0.001, "
             "sigma_p 0.03, guard every 50), House resized, 50% of pixels missing. "
             "`reference` = loop like the original code (float32, NCHW, eager, BatchNorm running "
             "stats, host copy and PSNR every iteration); `engine` = `DIPRun` defaults "
             f"({report['speed'][0]['fast_path'] if report['speed'] else 'see above'}).", "",
             ]
    if dev != "cuda":
        lines += [f"bf16 hardware on this CPU: {report.get('bf16_hardware', 'unknown')}; bf16 autocast "
                  "pays only with AVX512-BF16 or AMX, so `precision=auto` stays float32 without them.", ""]
    if report["speed"]:
        lines += ["Wall and process-CPU seconds per iteration, medians of "
                  f"{report['speed'][0].get('rounds', 1)} rounds timed in alternation after an untimed "
                  "warm-up pair.", "",
                  "| size | reference s/it | engine s/it | speed-up | reference CPU-s/it | engine CPU-s/it |" + (
                      " GFLOP/it | TFLOP/s ref | TFLOP/s engine | peak GiB ref | peak GiB engine |"
                      if dev == "cuda" else ""),
                  "|---|---|---|---|---|---|" + ("---|---|---|---|---|" if dev == "cuda" else "")]
    for r in report["speed"]:
        line = (f"| {r['size']}x{r['size']} | {r['reference_s']:.4f} | {r['engine_s']:.4f} | x{r['ratio']:.2f} |"
                f" {r.get('reference_cpu_s', float('nan')):.4f} | {r.get('engine_cpu_s', float('nan')):.4f} |")
        if dev == "cuda":
            line += (f" {r['gflop']:.0f} | {r['reference_tflops']:.1f} | {r['engine_tflops']:.1f} |"
                     f" {r['reference_peak_gib']:.2f} | {r['engine_peak_gib']:.2f} |")
        lines.append(line)
    q = report["quality"]
    if q["rows"]:
        lines += ["", f"Quality guard ({q['size']}x{q['size']}, {q['iterations']} iterations, final-"
                  "iteration PSNR against the clean image):", "",
                  "| seed | reference dB | engine dB |", "|---|---|---|"]
        lines += [f"| {r['seed']} | {r['reference_psnr']:.2f} | {r['engine_psnr']:.2f} |" for r in q["rows"]]
        lines += [f"| mean | {q['reference_mean']:.2f} | {q['engine_mean']:.2f} |", "",
                  f"Difference {q['difference']:+.2f} dB: **{'PASS' if q['passed'] else 'FAIL'}** "
                  "(the fast path may be the default only within 0.1 dB of the reference)."]
    b = report.get("batch")
    if b:
        lines += ["", f"Batched restarts ({b['members']} networks, {b['size']}x{b['size']}, "
                  f"strategy {b.get('strategy', 'vmap')}, "
                  f"{b['iterations']} iterations each): sequential {b['sequential_img_it_per_s']:.2f}, "
                  f"batched {b['batched_img_it_per_s']:.2f} image-iterations/s "
                  f"(x{b['batched_img_it_per_s'] / b['sequential_img_it_per_s']:.2f})."]
    big = report.get("big")
    if big:
        lines += ["", f"2048x2048 input: {big['outcome']}"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", help="default: 128 256 on CPU, 256 512 on GPU")
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations (default 10 CPU, 200 GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 3 CPU, 50 GPU)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--quality-size", type=int, default=None, help="default 128 CPU, 512 GPU")
    parser.add_argument("--quality-iterations", type=int, default=None, help="default 1000 CPU, 3000 GPU")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=4, help="networks in the batched-run test (0: skip)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--batch-strategy", default="auto", choices=["auto", "vmap", "loop"])
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: the free cores)")
    parser.add_argument("--engine-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an engine setting, e.g. --engine-set compile=on")
    parser.add_argument("--write", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="Markdown file to append this report to ('-': do not write)")
    args = parser.parse_args(argv)

    # the same threads for both loops (the engine alone would otherwise pick the free cores)
    src_core.speed.choose_threads(args.threads or src_core.speed.default_threads())
    device = src_core.resolve_device(args.device)
    gpu = device.type == "cuda"
    sizes = args.sizes or ([256, 512] if gpu else [128, 256])
    iterations = args.iterations or (200 if gpu else 10)
    warmup = args.warmup or (50 if gpu else 3)
    from src_core.config import parse_value

    engine_overrides = dict(item.split("=", 1) for item in args.engine_set)
    cfg = preset("table1", device=str(device), **{k: parse_value(v) for k, v in engine_overrides.items()})
    report = {"device": device.type, "machine": machine_line(device),
              "date": datetime.date.today().isoformat(),
              "command": command_line(__file__, argv)}
    print(report["machine"], flush=True)
    print("speed:", flush=True)
    report["bf16_hardware"] = bf16_hardware() if device.type == "cpu" else None
    report["speed"] = [] if args.skip_speed else speed_rows(sizes, cfg, device, iterations, warmup,
                                                            args.rounds)
    q_size = args.quality_size or (512 if gpu else 128)
    q_its = args.quality_iterations or (3000 if gpu else 1000)
    rows = []
    if not args.skip_quality:
        print("quality:", flush=True)
        rows = quality_rows(q_size, cfg, device, q_its, args.seeds)
    quality = {"size": q_size, "iterations": q_its, "rows": rows}
    if rows:
        ref = float(np.mean([r["reference_psnr"] for r in rows]))
        fast = float(np.mean([r["engine_psnr"] for r in rows]))
        quality.update(reference_mean=ref, engine_mean=fast, difference=fast - ref,
                       passed=fast >= ref - 0.1)
    report["quality"] = quality
    if args.batch:
        print("batched:", flush=True)
        report["batch"] = batch_row(sizes[0], cfg, args.batch, max(iterations, 5), args.batch_strategy)
    report["big"] = big_image_row(cfg)
    print("2048x2048:", report["big"]["outcome"], flush=True)
    text = markdown(report)
    print(text)
    if str(args.write) != "-":
        args.write.parent.mkdir(parents=True, exist_ok=True)
        with open(args.write, "a") as fh:
            fh.write("\n" + text)
        json_path = args.write.with_suffix(".json")
        history = json.loads(json_path.read_text()) if json_path.exists() else []
        history.append(report)
        json_path.write_text(json.dumps(history, indent=1))
        print(f"appended to {args.write} and {json_path}")


if __name__ == "__main__":
    main()
