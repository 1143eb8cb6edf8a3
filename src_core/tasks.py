"""The tasks, in one registry that the API, the command line and the widget all read.

A task is a degradation (an operator builder, see :mod:`src_core.operators`)
together with what a user expects of it: the words that explain it, how it
gets its mask, its paper preset on a GPU and its settings on a CPU, the
classical method it is compared with, and whether observed pixels are kept
in the answer.  Adding a task here adds it to ``restore(task=...)``, to a
``dip <task>`` subcommand and to the widget's task list.

>>> get_task("sr").operator(factor=8)
Downsample(factor=8, kernel=lanczos2)
>>> get_task("sr").default_preset("cuda", {"factor": 8})
('sr8', {})
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import DIPError
from .operators import Blur, Downsample, Identity, Operator, gaussian_psf


@dataclass(frozen=True)
class Option:
    """A task's own setting (not a RunConfig field): given to the API by name, and as
    ``--<name>`` on the command line."""

    name: str
    default: object
    help: str
    kind: type = int
    #: what a form shows: its label and the range it offers
    label: str = ""
    low: float = 0
    high: float = 1e9
    #: an image may stand for the value (a PSF from a bead image): the label of a form's field
    #: that picks it ("" = only the number)
    image: str = ""


@dataclass(frozen=True)
class Task:
    name: str
    help: str
    #: "required": the user paints or loads one; "random": the task draws a Bernoulli mask;
    #: "optional": every pixel is observed unless a mask says otherwise
    mask: str
    #: the presets of the paper's experiments of this task; the first is a GPU's default
    presets: tuple[str, ...]
    classical: str | None
    keep_observed: bool
    #: settings on top of the small ``cpu`` preset when no preset is named on a CPU
    cpu_settings: dict = field(default_factory=dict)
    #: the answer may be this many times brighter than the observation's range (a blur lowers peaks)
    headroom: float = 1.0
    #: the answer is the EMA of outputs at this rate when the configuration has none
    ema: float = 0.0
    options: tuple[Option, ...] = ()
    build: Callable[..., Operator] = lambda **_: Identity()
    #: which of ``presets`` the task's options call for (default: the first)
    choose_preset: Callable[[dict], int] = lambda options: 0
    #: noisy data: early stopping on by default (stop before the noise is fitted)
    noisy: bool = False

    def paper_preset(self, options: dict) -> str:
        return self.presets[self.choose_preset(self.resolve(options))]

    def operator(self, **options) -> Operator:
        """The task's degradation, for these options (defaults filled in)."""
        return self.build(**self.resolve(options))

    def resolve(self, options: dict) -> dict:
        known = {o.name for o in self.options}
        unknown = set(options) - known
        if unknown:
            raise DIPError(f"task {self.name!r} has no option {sorted(unknown)[0]!r}; "
                           f"its options are {sorted(known) or 'none'}.")
        return {o.name: options.get(o.name, o.default) for o in self.options}

    def default_preset(self, device_type: str, options: dict) -> tuple[str, dict]:
        """The preset (and settings) when the user names none: the paper's on a GPU, the
        small ``cpu`` preset elsewhere (the paper's settings take hours on a CPU)."""
        if device_type == "cuda":
            return self.paper_preset(options), {}
        return "cpu", dict(self.cpu_settings)


def _blur(psf=2.0, psf_z=0.0) -> Blur:
    if not isinstance(psf_z, numbers.Real) or isinstance(psf_z, bool) or not 0 <= psf_z <= 50:
        raise DIPError("psf_z is the PSF's Gaussian sigma along z in planes, in [0, 50] (0: a 2D PSF); got "
                       + (repr(psf_z) if isinstance(psf_z, numbers.Number) else f"a {type(psf_z).__name__}") + ".")
    if isinstance(psf, numbers.Real) and not isinstance(psf, bool):
        return Blur(gaussian_psf(float(psf), sigma_z=float(psf_z) if psf_z > 0 else None))
    if psf is None:
        raise DIPError("deconvolution needs a PSF: an image of a bead (a 2D array or file, or a 3D stack "
                       "for a z-stack) or a Gaussian sigma in pixels, e.g. psf=2.0.")
    if psf_z > 0:
        raise DIPError("psf_z makes a Gaussian PSF 3D; a PSF given as an image is used as it is. Give "
                       "either a 3D PSF image, or psf as a sigma with psf_z.")
    return Blur(np.asarray(psf))


_NOISY = {"ema": 0.99, "sigma_p": 1 / 30, "early_stop": True}
#: a fill's CPU default answers with the running average of outputs: a free lever (one multiply-add
#: an iteration) that reached the plain output's best sooner and ended higher on the cases of
#: benchmarks/time_to_quality.py (docs/results/time_to_quality, "A running average")
_FILL = {"ema": 0.95, "ema_warmup": True}

TASKS_BY_NAME: dict[str, Task] = {t.name: t for t in (
    Task("inpaint", "fill the painted mask", mask="required", presets=("text", "vase", "library"),
         classical="biharmonic", keep_observed=True, cpu_settings=_FILL),
    Task("random", "restore dropped pixels (a test)", mask="random",
         presets=("table1",), classical="biharmonic", keep_observed=True, cpu_settings=_FILL),
    Task("denoise", "remove noise", mask="optional", presets=("denoise",),
         classical="nlm", keep_observed=False, cpu_settings=_NOISY, ema=0.99, noisy=True),
    Task("sr", "super-resolution, factor x larger", mask="optional",
         presets=("sr4", "sr8"), choose_preset=lambda o: int(o["factor"] >= 8), classical="bicubic",
         keep_observed=False,
         options=(Option("factor", 4, "how many times larger along X and Y (the paper: 4, 8)",
                         label="SR factor", low=2, high=16),),
         build=lambda factor: Downsample(factor)),
    Task("deconvolve", "undo a known blur (PSF)", mask="optional",
         presets=("restore",), classical="richardson-lucy", keep_observed=False,
         cpu_settings=_NOISY, ema=0.99, headroom=2.0, noisy=True,
         options=(Option("psf", 2.0, "the point-spread function: a Gaussian sigma in pixels, "
                         "or an image of it", kind=float, label="PSF sigma (px)", low=0.1, high=50.0,
                         image="PSF layer"),
                  Option("psf_z", 0.0, "a Gaussian PSF's sigma along z in planes, for a z-stack "
                         "(0: a 2D PSF)", kind=float, label="PSF sigma z (planes)", low=0.0, high=50.0)),
         build=_blur),
)}

#: every task, with the words a user reads for it
TASK_HELP = {name: t.help for name, t in TASKS_BY_NAME.items()}
TASKS = tuple(TASKS_BY_NAME)


def take_options(task: Task, settings: dict) -> dict:
    """Pop ``task``'s own options out of ``settings`` (keyword arguments that also hold
    RunConfig fields); an option of another task is an error, not an unknown setting."""
    options = {o.name: settings.pop(o.name) for o in task.options if o.name in settings}
    for other in TASKS_BY_NAME.values():
        for option in other.options:
            if option.name in settings:
                raise DIPError(f"{option.name!r} is an option of task {other.name!r}, not of {task.name!r}.")
    return options


def preset_task(preset: str) -> str | None:
    """The task whose paper experiment ``preset`` is (None: a preset for any task, as ``cpu``)."""
    return next((t.name for t in TASKS_BY_NAME.values() if preset in t.presets), None)


def get_task(name: str) -> Task:
    """A task by name (``src_core.TASKS``): its mask, options, operator and classical answer."""
    if name not in TASKS_BY_NAME:
        raise DIPError(f"task must be one of {TASKS} (got {name!r}); or pass your own operator=.")
    return TASKS_BY_NAME[name]
