"""Run configuration, the paper's presets, and JSON round trips.

A run is fully described by a :class:`RunConfig`; saving it next to a result
makes the result repeatable.  Presets carry the settings of the original
notebooks (docs/paper.md §4); any field can be overridden by name, and
network fields either flat (``scales=4``) or dotted (``network.scales=4``).
"""

from __future__ import annotations

import ast
import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields

from .errors import DIPError
from .network import NETWORKS, Generator, NetworkConfig, from_dict as network_from_dict, network_settings

INPUT_KINDS = ("uniform", "gaussian", "meshgrid")
OPTIMIZERS = ("adam", "lbfgs")
#: the fast path's settings (``src_core.speed`` decides what "auto" means on a device)
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
#: "graph": record one iteration as a CUDA graph and replay it; "on", "reduce-overhead",
#: "max-autotune": torch.compile in that mode; "off": plain eager kernels
COMPILE_MODES = ("auto", "on", "off", "graph", "reduce-overhead", "max-autotune")
#: what the guard puts back with the weights after a fall (RunConfig's docstring)
GUARD_RESTORES = ("all", "damped")
#: the data terms (src_core.fidelity)
FIDELITIES = ("mse", "poisson")


@dataclass
class RunConfig:
    """Everything that decides a run's result (plus how often to report).

    ``report_every``: metrics (one host sync) every k iterations.
    ``snapshot_every``: copy the current output to the host every k
    iterations (0 = only at the end).
    ``guard``: the original code's destabilisation guard; every
    ``guard_every`` iterations the fit PSNR is compared with the last check
    and the last good weights are restored if it fell by more than
    ``guard_drop_db``.
    ``guard_restore``: what a fall puts back besides the weights. "all" (the
    default): Adam's moments of the last good check too, which also clears a
    NaN. "damped": Adam's first moment is cleared and its second is kept at
    the larger of the saved and the current one, so the next steps are small,
    as the original's kept moments make them; for runs that fall again and
    again from the same weights (docs/reproduction.md).
    ``early_stop``: ES-WMV (Wang et al. 2021), running variance of the last
    ``es_window`` outputs; stop after ``es_patience`` iterations without a
    new minimum and return the output at the minimum.
    ``ema``: exponential moving average of outputs (0 = off); when on, it is
    the answer (the paper's denoising setting uses 0.99).  ``ema_warmup``: the
    average's rate grows as min(ema, (1 + t) / (10 + t)) at iteration t, so the first
    outputs (still the random network's) fade within tens of iterations instead of
    weighing on the answer for hundreds; off in the paper presets (their average starts
    at the first output, as in the original notebooks).
    ``fidelity``: the data term (:mod:`src_core.fidelity`): "mse", the paper's, or
    "poisson" for photon counts, with ``photon_gain`` (the input's units per photon) and
    ``photon_offset`` (the input's value at zero photons) saying how a value is counted.
    ``warm_start`` (0 = off): in a stack run here slice by slice, each slice after the first
    starts from the last one's final weights instead of random ones and runs ``warm_start``
    times the iterations (its neighbour's answer is most of the way to its own:
    docs/results/warm_start). Tiles and a cluster's slices always start from random weights.
    ``restarts``: K networks from seeds ``seed``, ``seed + 1``, ... fitted together to the same
    data; the answer is their mean (averaging restarts raises PSNR, as the paper notes) and
    their disagreement is the answer's spread, a map of where the data leave the fill open
    (docs/results/restarts). K times the work of one run; Adam only.
    ``precision`` / ``memory_format`` / ``compile``: the fast path; "auto"
    picks what measured fastest at equal PSNR on the device
    (docs/benchmarks.md); "float32"/"contiguous"/"off" is the original code's path.
    """

    network: Generator = field(default_factory=NetworkConfig)
    input_kind: str = "uniform"
    input_scale: float = 0.1
    sigma_p: float = 0.03
    optimizer: str = "adam"
    lr: float = 0.01
    iterations: int = 3000
    seed: int = 0
    lbfgs_warmup: int = 100
    guard: bool = True
    guard_every: int = 50
    guard_drop_db: float = 5.0
    guard_restore: str = "all"
    early_stop: bool = False
    es_window: int = 100
    es_patience: int = 1000
    ema: float = 0.0
    ema_warmup: bool = False
    report_every: int = 50
    snapshot_every: int = 0
    compute_ssim: bool = True
    fidelity: str = "mse"
    photon_gain: float = 1.0
    photon_offset: float = 0.0
    warm_start: float = 0.0
    restarts: int = 1
    device: str = "auto"
    precision: str = "auto"
    memory_format: str = "auto"
    compile: str = "auto"
    preset: str = "custom"

    def validate(self) -> "RunConfig":
        """Check every field before any heavy work; return self for chaining."""
        self.network.validate()
        if self.input_kind not in INPUT_KINDS:
            raise DIPError(f"input_kind must be one of {INPUT_KINDS} (got {self.input_kind!r}).")
        if self.input_kind == "meshgrid" and self.network.input_channels != 2:
            raise DIPError(
                "a meshgrid input has 2 channels: set input_channels=2 "
                f"(got {self.network.input_channels})."
            )
        if self.optimizer not in OPTIMIZERS:
            raise DIPError(f"optimizer must be one of {OPTIMIZERS} (got {self.optimizer!r}).")
        _number("lr", self.lr, 0, MAX_LR, low_open=True)
        _number("input_scale", self.input_scale, 0, MAX_INPUT_SCALE, low_open=True)
        _number("sigma_p", self.sigma_p, 0, MAX_SIGMA_P)
        _number("guard_drop_db", self.guard_drop_db, 0, 100, low_open=True)
        _number("ema", self.ema, 0, 1, high_open=True)
        _whole("iterations", self.iterations, 1, MAX_ITERATIONS)
        _whole("report_every", self.report_every, 1)
        _whole("snapshot_every", self.snapshot_every, 0)
        _whole("guard_every", self.guard_every, 1)
        _whole("es_window", self.es_window, 2, MAX_ITERATIONS)
        _whole("es_patience", self.es_patience, 1)
        _whole("lbfgs_warmup", self.lbfgs_warmup, 0)
        _whole("seed", self.seed, 0, MAX_SEED)
        if self.fidelity not in FIDELITIES:
            raise DIPError(f"fidelity must be one of {FIDELITIES} (got {self.fidelity!r}).")
        _number("photon_gain", self.photon_gain, 0, MAX_PHOTON_GAIN, low_open=True)
        _number("photon_offset", self.photon_offset, -MAX_PHOTON_OFFSET, MAX_PHOTON_OFFSET)
        _number("warm_start", self.warm_start, 0, 1)
        _whole("restarts", self.restarts, 1, MAX_RESTARTS)
        if self.restarts > 1 and self.optimizer != "adam":
            raise DIPError(f"restarts are fitted together with Adam; use optimizer='adam' or restarts=1 "
                           f"(got optimizer={self.optimizer!r}, restarts={self.restarts}).")
        for name in ("guard", "early_stop", "ema_warmup", "compute_ssim"):
            if not isinstance(getattr(self, name), bool):
                raise DIPError(f"{name} must be true or false (got {getattr(self, name)!r}).")
        for name in ("device", "preset"):
            if not isinstance(getattr(self, name), str):
                raise DIPError(f"{name} must be a string (got {getattr(self, name)!r}).")
        for name, allowed in (("precision", PRECISIONS), ("memory_format", MEMORY_FORMATS),
                              ("compile", COMPILE_MODES), ("guard_restore", GUARD_RESTORES)):
            if getattr(self, name) not in allowed:
                raise DIPError(f"{name} must be one of {allowed} (got {getattr(self, name)!r}).")
        return self

    def warm_iterations(self) -> int:
        """The iterations of a warm-started slice."""
        return max(1, round(self.iterations * self.warm_start)) if self.warm_start > 0 else self.iterations

    def stack_iterations(self, slices: int, warm: bool = True) -> int:
        """The iterations of ``slices`` slices: run here in turn (``warm``: the first from random
        weights, the others warm if ``warm_start``), or each from random weights (``warm=False``:
        a cluster's slices, tiles)."""
        if not warm:
            return slices * self.iterations
        return self.iterations + (slices - 1) * self.warm_iterations() if slices > 0 else 0

    def to_dict(self) -> dict:
        """The settings as saved; a later setting at its default is left out, so the
        fingerprints of results folders made before it existed still match."""
        data = asdict(self)
        data["network"] = self.network.to_dict()
        for name, default in (("guard_restore", "all"), ("fidelity", "mse"), ("photon_gain", 1.0),
                              ("photon_offset", 0.0), ("warm_start", 0.0), ("restarts", 1)):
            if data[name] == default:
                del data[name]
        return data

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), indent=2, **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """A validated configuration from a dict such as a saved ``config.json``."""
        if not isinstance(data, dict):
            raise DIPError(f"a configuration is a JSON object of settings (got {type(data).__name__}); "
                           "see any saved config.json for the form.")
        data = dict(data)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise DIPError(f"unknown configuration fields {sorted(map(str, unknown))}.")
        net = data.pop("network", None)
        if net is None:
            net = {}
        if not isinstance(net, dict):
            raise DIPError(f"'network' must be an object of network settings (got {net!r:.80}).")
        return cls(network=network_from_dict(net), **data).validate()

    @classmethod
    def from_json(cls, text) -> "RunConfig":
        return cls.from_dict(_parse_json(text))

    @classmethod
    def load(cls, path) -> "RunConfig":
        """Read a ``config.json`` (or a history JSON, whose ``config`` is used), with a clear
        error for a missing, unreadable or malformed file."""
        try:
            raw = open(path, "rb").read()
        except OSError as exc:
            raise DIPError(f"cannot read the configuration {str(path)!r}: {exc.strerror or exc}.") from None
        try:
            data = _parse_json(raw)
            if isinstance(data, dict) and isinstance(data.get("config"), dict):
                data = data["config"]
            return cls.from_dict(data)
        except DIPError as exc:
            raise DIPError(f"{path}: {exc}") from None

    def with_input_kind(self, kind: str) -> "RunConfig":
        """A copy with another network input, and the channel count that input needs
        (a meshgrid is the 2 coordinate channels; leaving it restores the default 32)."""
        new = self.replace(input_kind=kind)
        if kind == "meshgrid":
            new.network.input_channels = 2
        elif self.input_kind == "meshgrid" or self.network.input_channels == 2:
            new.network.input_channels = type(self.network).input_channels
        return new

    def replace(self, **overrides) -> "RunConfig":
        """A copy with fields overridden; network fields may be given flat or dotted, and
        ``architecture`` (applied first) switches to another generator at its defaults."""
        new = copy.deepcopy(self)
        overrides = dict(overrides)
        architecture = overrides.pop("architecture", overrides.pop("network.architecture", None))
        if architecture is not None and architecture != new.network.architecture:
            new.network = network_settings(architecture)
        net_names = new.network.field_names()
        run_names = {f.name for f in fields(RunConfig)}
        for key, value in overrides.items():
            name = key[len("network."):] if key.startswith("network.") else key
            if name in net_names and (key.startswith("network.") or name not in run_names):
                setattr(new.network, name, value)
            elif name in run_names and name != "network":
                setattr(new, name, value)
            elif key == "network" and isinstance(value, Generator):
                new.network = copy.deepcopy(value)
            else:
                raise DIPError(
                    f"unknown setting {key!r}; run settings are {sorted(run_names - {'network'})}, "
                    f"{new.network.architecture} network settings are {sorted(net_names)} "
                    f"(architecture= picks another of {sorted(NETWORKS)})."
                )
        return new

    def result_settings(self) -> dict:
        """The settings that decide the result (the fingerprint's): all but :data:`HOW_IT_RUNS`."""
        return {k: v for k, v in self.to_dict().items() if k not in HOW_IT_RUNS}

    def how_it_runs(self) -> dict:
        """The settings that choose only how the run goes (``src_core.speed`` resolves them)."""
        return {name: getattr(self, name) for name in HOW_IT_RUNS}


#: the settings that choose how a run goes, not what it computes (the device, the kernels and
#: the arithmetic that runs them): a checkpoint resumes, and a results folder mixes units,
#: across them; each result records what it ran with (``History.fast_path``, ``device``)
HOW_IT_RUNS = ("device", "precision", "memory_format", "compile")


def parse_value(text: str):
    """'0.01' -> 0.01, '[4, 4]' -> [4, 4], 'true' -> True, anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text  # the configuration's checks then say what the setting takes


def parse_settings(items, example: str = "scales=4") -> dict:
    """Command-line ``KEY=VALUE`` settings (``--set``) as overrides for :meth:`RunConfig.replace`."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise DIPError(f"--set takes KEY=VALUE (got {item!r}), e.g. --set {example}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out


def _parse_json(text):
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DIPError("the configuration is not UTF-8 text; give a JSON file such as a "
                           "saved config.json.") from None
    if not isinstance(text, str) or not text.strip():
        raise DIPError("the configuration is empty; give a JSON object such as a saved config.json.")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DIPError(f"the configuration is not valid JSON ({str(exc)[:120]}).") from None


# Bounds far beyond any useful run, so that a typo or an overflow fails here, before any
# network is built, instead of as zeros or NaN after the run (lr=1e308 gave an all-zero image).
MAX_LR = 10.0
MAX_INPUT_SCALE = 100.0
MAX_SIGMA_P = 10.0
MAX_ITERATIONS = 10_000_000
MAX_PHOTON_GAIN = 1e6
MAX_PHOTON_OFFSET = 1e9
MAX_SEED = 2 ** 63 - 2 ** 20  # torch generators take < 2**64; members add small offsets
MAX_RESTARTS = 16  # each restart is a whole run's work and memory


def _number(name, value, low, high, low_open=False, high_open=False):
    """A finite real number in [low, high] (bounds excluded where asked); never a bool or string."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (value < high if high_open else value <= high))
    if not ok:
        if name == "lr" or (low == 0 and low_open):
            kind = f"a positive number up to {high:g}"
        else:
            kind = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        hint = "; use 0 to switch it off" if name == "ema" else ""
        raise DIPError(f"{name} must be {kind} (got {value!r}){hint}.")


def _whole(name, value, minimum, maximum=None):
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        upper = "" if maximum is None else f" and <= {maximum:,}"
        raise DIPError(f"{name} must be a whole number >= {minimum}{upper} (got {value!r}).")


def _standard(**net) -> NetworkConfig:
    return NetworkConfig(**net)


@dataclass(frozen=True)
class Preset:
    """Named settings; which tasks a preset is the paper's for is the task's to say
    (``src_core.tasks.Task.presets``), so a preset names no task."""

    name: str
    description: str
    config: RunConfig


# The settings of the original notebooks (docs/paper.md §4).  The guard is on where the
# notebook has one (restoration, denoising) and off where it has none (inpainting, super-
# resolution); docs/engine.md lists what still differs from the notebooks, and why.
PRESETS: dict[str, Preset] = {
    "table1": Preset("table1", "Table 1 / Fig. 7 bottom: 50% random pixels missing (restoration notebook, "
                     "with its guard; differs: Barbara at 512x512, not reflection-padded to 514; docs/engine.md)",
        RunConfig(network=_standard(upsample="bilinear"), input_kind="uniform",
                  lr=0.001, iterations=11000, sigma_p=0.03),
    ),
    "text": Preset("text", "Fig. 7 top: text inpainting (Kate; no guard, as the inpainting notebook)",
        RunConfig(network=_standard(skip_channels=128, upsample="nearest"),
                  lr=0.01, iterations=6001, sigma_p=0.03, guard=False),
    ),
    "vase": Preset("vase", "large-hole inpainting (Vase): meshgrid input, no skips, no guard (as the notebook)",
        RunConfig(network=_standard(input_channels=2, skip_channels=0, upsample="nearest"),
                  input_kind="meshgrid", lr=0.01, iterations=5001, sigma_p=0.03, guard=False),
    ),
    "library": Preset("library", "large-hole inpainting (Library): 6 scales, no skips, 5x5 down kernels, "
                      "no guard (as the notebook)",
        RunConfig(network=_standard(scales=6, input_channels=1,
                                    down_channels=[16, 32, 64, 128, 128, 128],
                                    up_channels=[16, 32, 64, 128, 128, 128],
                                    skip_channels=0, down_kernel=5,
                                    upsample="nearest", conv_after_join=False),
                  lr=0.01, iterations=3001, sigma_p=0.0, guard=False),
    ),
    "denoise": Preset("denoise", "denoising (sigma 25): output is the EMA (0.99) of outputs; with the notebook's guard",
        RunConfig(network=_standard(upsample="bilinear"), lr=0.01, iterations=3000,
                  sigma_p=1 / 30, ema=0.99),
    ),
    "sr4": Preset("sr4", "super-resolution x4 (zebra): loss through the Lanczos downsampler; no guard "
                  "(as the notebook)",
        RunConfig(network=_standard(upsample="bilinear"), lr=0.01, iterations=2000,
                  sigma_p=0.03, guard=False),
    ),
    "sr8": Preset("sr8", "super-resolution x8: as x4, with more steps and more input noise",
        RunConfig(network=_standard(upsample="bilinear"), lr=0.01, iterations=4000,
                  sigma_p=0.05, guard=False),
    ),
    "restore": Preset("restore", "the supplementary material's standard restoration setting (used for "
                      "deconvolution and your own operators; not a paper experiment)",
        RunConfig(network=_standard(upsample="bilinear"), lr=0.01, iterations=2000,
                  sigma_p=1 / 30),
    ),
    "cpu": Preset("cpu", "small CPU setting for every task (NOT the paper's): the paper's skip net "
                  "at 4 scales x 32 channels, 800 steps (with no count given, as many as fit the "
                  "time budget), early-stop patience 200; a stack's later slices start from the "
                  "slice before (a third of the steps)",
        RunConfig(network=_standard(scales=4, down_channels=32, up_channels=32,
                                    skip_channels=32, upsample="nearest"),
                  lr=0.01, iterations=800, sigma_p=0.03, report_every=25,
                  es_patience=200, warm_start=1 / 3),
    ),
}


def preset_names() -> list[str]:
    """The presets by name, in their table's order (``src_core.PRESETS`` has their settings)."""
    return list(PRESETS)


def preset(name: str, **overrides) -> RunConfig:
    """The paper's settings by name, with any field overridden.

    ```pycon
    >>> cfg = preset("table1", iterations=500)
    >>> cfg.lr, cfg.iterations, cfg.network.upsample
    (0.001, 500, 'bilinear')

    ```
    """
    if name not in PRESETS:
        raise DIPError(f"unknown preset {name!r}; choose one of {preset_names()}.")
    cfg = PRESETS[name].config.replace(preset=name, **overrides)
    return cfg.validate()
