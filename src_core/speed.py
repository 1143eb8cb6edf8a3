"""The fast path's decisions: precision, memory layout, compilation, memory needs.

Each "auto" choice is the one measured faster at equal quality on that kind
of device (docs/benchmarks.md); anything not measured stays on the safe side.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import platform
import threading
import warnings
from pathlib import Path

import torch

from .errors import DIPError

from .config import COMPILE_MODES, MEMORY_FORMATS, PRECISIONS  # noqa: F401 (named here too)


def cpu_name() -> str:
    """The processor's model name, for the records of measurements."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: set to 0 or 1 to make ``precision="auto"`` resolve on the CPU as on a CPU without (0) or with
#: (1) native bf16, whatever this one has: the test suite runs both ways (.ci/run), and a user can
#: keep float32 on a machine where bf16 is native but not wanted
CPU_BF16_ENV = "DIP_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX), not by emulation,
    unless ``DIP_CPU_BF16`` says otherwise."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise DIPError(f"{CPU_BF16_ENV} must be 0 or 1 (got {forced!r}); unset it to detect the CPU.")
    return _detected_native_bf16()


@functools.lru_cache(maxsize=1)
def _detected_native_bf16() -> bool:
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    if flags:
        return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    try:  # not Linux: ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the network body, or None for plain float32."""
    if requested not in PRECISIONS:
        raise DIPError(f"precision must be one of {PRECISIONS} (got {requested!r}).")
    if requested == "float32":
        return None
    if requested == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        return None  # MPS: float32 (see below)
    if device.type == "mps":
        raise DIPError(f"precision={requested!r} on Apple's MPS: napari-dip runs float32 there (its bfloat16 and "
                       "float16 paths were measured on CUDA GPUs and CPUs, never on Apple hardware); use "
                       "precision='auto' or 'float32'.")
    dtype = torch.bfloat16 if requested == "bfloat16" else torch.float16
    if dtype == torch.float16 and device.type == "cpu":
        raise DIPError("float16 is not supported on the CPU; use precision='bfloat16' or 'float32'.")
    return dtype


def resolve_memory_format(requested: str, device: torch.device, amp_dtype) -> torch.memory_format:
    if requested not in MEMORY_FORMATS:
        raise DIPError(f"memory_format must be one of {MEMORY_FORMATS} (got {requested!r}).")
    if requested == "auto":
        # channels_last pays off with tensor cores and with oneDNN's bf16 kernels;
        # for float32 on the CPU the default layout measured faster.
        fast = device.type == "cuda" or (device.type == "cpu" and amp_dtype is not None)
        return torch.channels_last if fast else torch.contiguous_format
    return torch.channels_last if requested == "channels_last" else torch.contiguous_format


def resolve_compile(requested: str, device: torch.device) -> str | bool:
    """The torch.compile mode of the network ("default", "reduce-overhead", ...), or False."""
    if requested not in COMPILE_MODES:
        raise DIPError(f"compile must be one of {COMPILE_MODES} (got {requested!r}).")
    if requested in ("auto", "off", "graph"):
        # Measured on the CPU: compiling costs more than it saves for this conv-bound net.
        return False
    return "default" if requested == "on" else requested


def resolve_graph(requested: str, device: torch.device, optimizer: str, amp_dtype) -> bool:
    """Whether each iteration's forward and backward pass is replayed as one CUDA graph.

    Eager PyTorch launches every kernel from Python; for this network that is
    hundreds of launches an iteration, which on a GPU takes longer than the
    arithmetic.  A graph (CUDA only) launches them at once.  Adam only (L-BFGS
    calls the pass several times a step) and not with float16's loss scaler.
    """
    if requested == "graph":
        if device.type != "cuda":
            raise DIPError(f"compile='graph' needs a CUDA device (this run is on {device}); "
                           "use compile='auto' or 'off'.")
        if optimizer != "adam" or amp_dtype == torch.float16:
            raise DIPError("compile='graph' works with optimizer='adam' in float32 or bfloat16; "
                           "use compile='auto' or 'off' for this run.")
        return True
    return (requested == "auto" and device.type == "cuda" and optimizer == "adam"
            and amp_dtype != torch.float16)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this run on the device, or None where it cannot be told."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def network_cost(network_config, channels: int, size) -> dict:
    """A shape-only (meta device) forward pass: FLOPs, activation elements, parameters, output size.

    Nothing is allocated and nothing is computed, so the cost does not grow with the size;
    the pass itself takes up to a second (building and tracing the network), so its answer
    is kept per network, channels and size: the widget asks again at every change of a field.
    """
    key = json.dumps(network_config.to_dict(), sort_keys=True)
    return dict(_network_cost(key, int(channels), tuple(int(s) for s in size)))


@functools.lru_cache(maxsize=256)
def _network_cost(network_json: str, channels: int, size: tuple) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from .network import build_network, from_dict

    network_config = from_dict(json.loads(network_json)).validate()

    with torch.device("meta"):
        meta_net = build_network(network_config, channels)
    elements = 0

    def count(_module, _inputs, output):
        nonlocal elements
        if isinstance(output, torch.Tensor):
            elements += output.numel()

    hooks = [m.register_forward_hook(count) for m in meta_net.modules() if not list(m.children())]
    flops = FlopCounterMode(display=False)
    with torch.no_grad(), flops:
        out = meta_net(torch.empty((1, *network_config.input_shape(*size)), device="meta"))
    for h in hooks:
        h.remove()
    return {"forward_flops": int(flops.get_total_flops()), "activation_elements": elements,
            "parameters": sum(p.numel() for p in meta_net.parameters()), "output_elements": out.numel()}


def estimate_memory(network_config, channels: int, size, amp_dtype, members: int = 1,
                    extra_images: int = 0) -> int:
    """Bytes a training step needs, from a shape-only (meta device) forward pass.

    Counts every module output (the activations autograd keeps), doubles it
    for their gradients during backward, and adds weights, gradients and
    Adam's two moments.  ``extra_images``: further image-sized float32
    buffers (EMA, early-stopping window).
    """
    cost = network_cost(network_config, channels, size)
    act_bytes = 2 if amp_dtype is not None else 4
    per_member = (2 * cost["activation_elements"] * act_bytes + 16 * cost["parameters"]
                  + 4 * cost["output_elements"] * (4 + extra_images))
    return members * per_member


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_chosen_threads: int | None = None


def _check_threads(threads, alternative: str = "") -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise DIPError(f"threads must be a whole number >= 1{alternative} (got {threads!r}).")
    cores = usable_cores()
    if threads > cores:  # allowed (a shared machine may lend more later), but never silently
        warnings.warn(f"{threads} threads asked for on {cores} usable core(s): OpenMP threads that outnumber "
                      "the cores wait for each other, and a run gets many times slower (benchmarks/threads.py, "
                      f"docs/benchmarks.md); ask for {cores} or fewer.", stacklevel=3)


def choose_threads(threads: int) -> None:
    """Make ``threads`` the default of every later run in this process (the CLI's --threads)."""
    global _chosen_threads
    _check_threads(threads)
    _chosen_threads = threads
    torch.set_num_threads(threads)


def default_threads(reserve: int = 0) -> int:
    """CPU threads for a run when none are asked for: the cores other work leaves free.

    OpenMP threads spin while they wait for each other, so more threads than
    free cores is not a little slower but catastrophically so: on a 2-core
    machine beside two busy processes, the ``cpu`` preset ran 16-21x slower
    with 2 threads than with 1 (``benchmarks/threads.py``, docs/benchmarks.md).
    So: the usable cores, minus the 1-minute load
    average (rounded; other jobs), minus ``reserve`` (napari keeps one for its
    GUI), and at least one; or what :func:`choose_threads` set.
    """
    if _chosen_threads is not None:
        return _chosen_threads
    cores = usable_cores()
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        busy = 0
    return max(1, cores - busy - reserve)


def resolve_threads(threads, device: torch.device, reserve: int = 0) -> int | None:
    """The thread count a CPU run uses (None on other devices): ``threads``, or the default."""
    if threads is not None and threads != "auto":
        _check_threads(threads, ", or None/'auto' for the free cores")
    if device.type != "cpu":
        return None
    return default_threads(reserve) if threads in (None, "auto") else threads


def check_memory(network_config, channels, size, amp_dtype, device, members=1, extra_images=0) -> int:
    """Refuse a run that cannot fit before it starts, saying how much it needs."""
    need = estimate_memory(network_config, channels, size, amp_dtype, members, extra_images)
    free = available_memory(device)
    if free is not None and need > 0.9 * free and not os.environ.get("DIP_SKIP_MEMORY_CHECK"):
        h, w = size
        bf16 = "" if amp_dtype is not None else "bfloat16 precision, "
        precision = str(amp_dtype or torch.float32).replace("torch.", "")
        raise DIPError(
            f"a {h}x{w} run in {precision} needs about {need / 2**30:.1f} GiB but {device} has "
            f"{free / 2**30:.1f} GiB free; restore it in tiles (src_core.restore_tiled, `--tile auto`, "
            f"or the region 'tiles' in napari), or use a smaller crop, fewer channels or scales, "
            f"{bf16}or a device with more memory."
        )
    return need


# glibc mallopt parameters and their defaults (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_TOP_PAD: 128 * 1024, _M_MMAP_MAX: 65536}
_allocator_lock = threading.Lock()
_allocator_users = 0


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


class FreedMemoryReuse:
    """Keep freed CPU memory in the process while a run computes.

    Each DIP step allocates and frees the same large activation buffers.
    glibc serves large blocks with mmap and returns them to the system on
    free, so every step page-faults its activations in again: measured here,
    that made elementwise layers 3-9x slower and a whole float32 step 30%
    slower at 256x256.  While any run is computing (:meth:`on`), large blocks
    come from the heap and freed memory stays for reuse; the defaults come
    back, and the heap is trimmed, when the last run goes :meth:`off`.  At
    every event a run hands out it is :meth:`paused`, so a run left suspended
    (a loop broken out of, a GUI waiting) does not make the rest of the
    process keep what it frees.
    Linux/glibc only; elsewhere a no-op.
    """

    def __init__(self, device: torch.device):
        self.libc = _glibc() if device.type == "cpu" else None
        self.active = False

    @property
    def available(self) -> bool:
        return self.libc is not None

    def on(self) -> None:
        global _allocator_users
        if self.libc is None or self.active:
            return
        with _allocator_lock:
            if _allocator_users == 0:
                self.libc.mallopt(_M_MMAP_MAX, 0)
                self.libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                self.libc.mallopt(_M_TOP_PAD, 64 * 2**20)
            _allocator_users += 1
            self.active = True

    def off(self) -> None:
        """Back to glibc's defaults, and the freed heap returned, when no other run is on."""
        global _allocator_users
        if not self.active:
            return
        with _allocator_lock:
            _allocator_users -= 1
            self.active = False
            if _allocator_users == 0:
                for param, value in _DEFAULTS.items():
                    self.libc.mallopt(param, value)
                self.libc.malloc_trim(0)

    @contextlib.contextmanager
    def paused(self):
        """While the consumer holds control: large blocks are mmapped again, so what it
        allocates and frees goes back to the system, but the run's own heap stays warm."""
        if not self.active:
            yield
            return
        with _allocator_lock:
            self.libc.mallopt(_M_MMAP_MAX, _DEFAULTS[_M_MMAP_MAX])
        try:
            yield
        finally:
            with _allocator_lock:
                if _allocator_users > 0:
                    self.libc.mallopt(_M_MMAP_MAX, 0)
