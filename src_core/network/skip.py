"""The "skip" hourglass network of Deep Image Prior (Ulyanov et al., CVPR 2018).

Built from the architecture description in the paper's supplementary material
and docs/paper.md §3.  Per scale i (0 = full resolution):

* skip branch: conv k_s -> n_s[i], BN, act (absent when n_s[i] == 0);
* down branch: conv k_d stride 2 -> n_d[i], BN, act; conv k_d, BN, act; the
  next scale; upsample x2;
* join: concat [skip, down], BN, conv k_u -> n_u[i], BN, act, and optionally
  a 1x1 conv, BN, act.

After scale 0 a 1x1 conv maps to the output channels, followed by a sigmoid.
BatchNorm always uses batch statistics (DIP optimises one image, there is no
"inference" phase), so running statistics are neither tracked nor updated.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import DIPError
from .base import (MAX_CHANNELS, MAX_KERNEL, MAX_SCALES, Generator, check_choice, check_flags,
                   not_whole, per_scale, whole_in)

UPSAMPLE_MODES = ("nearest", "bilinear")
DOWNSAMPLE_MODES = ("stride", "avg", "max", "lanczos2", "lanczos3")
ACTIVATIONS = ("leaky_relu", "swish", "elu", "none")
PADDINGS = ("reflection", "zero")
#: the fields that take one value per scale (a single value means "the same at every scale")
PER_SCALE_FIELDS = ("down_channels", "up_channels", "skip_channels", "down_kernel", "up_kernel",
                    "skip_kernel", "upsample", "downsample")


@dataclass
class NetworkConfig(Generator):
    """Every option of the original ``skip`` network; lists are per scale.

    A single number for a per-scale field means "the same at every scale".
    ``skip_channels`` of 0 at a scale removes that skip connection.
    """

    scales: int = 5
    input_channels: int = 32
    down_channels: int | list[int] = 128
    up_channels: int | list[int] = 128
    skip_channels: int | list[int] = 4
    down_kernel: int | list[int] = 3
    up_kernel: int | list[int] = 3
    skip_kernel: int | list[int] = 1
    upsample: str | list[str] = "bilinear"
    downsample: str | list[str] = "stride"
    activation: str = "leaky_relu"
    padding: str = "reflection"
    conv_after_join: bool = True
    sigmoid: bool = True
    bias: bool = True

    architecture = "skip"

    def validate(self) -> "NetworkConfig":
        """Return a copy with every per-scale field expanded to a list, or raise."""
        whole_in("scales", self.scales, 1, MAX_SCALES)
        whole_in("input_channels", self.input_channels, 1, MAX_CHANNELS)
        s = self.scales
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in PER_SCALE_FIELDS:
            out[name] = per_scale(out[name], s, name)
        for name in ("down_channels", "up_channels"):
            for c in out[name]:
                whole_in(name, c, 1, MAX_CHANNELS, out[name])
        for c in out["skip_channels"]:
            whole_in("skip_channels", c, 0, MAX_CHANNELS, out["skip_channels"])
        for name in ("down_kernel", "up_kernel", "skip_kernel"):
            if any(not_whole(k) or not 1 <= k <= MAX_KERNEL or k % 2 == 0 for k in out[name]):
                raise DIPError(f"{name} must be odd whole numbers from 1 to {MAX_KERNEL} "
                               f"(got {out[name]!r}).")
        for name, allowed in (("upsample", UPSAMPLE_MODES), ("downsample", DOWNSAMPLE_MODES)):
            for value in out[name]:
                check_choice(name, value, allowed)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("padding", self.padding, PADDINGS)
        check_flags(self, ("conv_after_join", "sigmoid", "bias"))
        return NetworkConfig(**out)

    def with_scales(self, scales: int) -> "NetworkConfig":
        """A copy with another depth; per-scale lists are cut, or extended with their last value."""
        out = copy.deepcopy(self)
        out.scales = scales
        for name in PER_SCALE_FIELDS:
            value = getattr(out, name)
            if isinstance(value, (list, tuple)) and isinstance(scales, int) and scales >= 1:
                value = list(value)
                setattr(out, name, (value + value[-1:] * scales)[:scales])
        return out

    def min_size(self) -> int:
        """Smallest image side (before padding) the network can take.

        The deepest scale sees side / 2**scales pixels and, with reflection
        padding, must be larger than the widest pad there.
        """
        v = self.validate()
        deepest_pad = (max(v.down_kernel[-1], 3 if v.downsample[-1].startswith("lanczos") else 1) - 1) // 2
        need = deepest_pad + 1 if v.padding == "reflection" else 1
        return (2 ** v.scales) * need

    def width(self) -> int:
        v = self.validate()
        return max(v.down_channels + v.up_channels)

    def with_width(self, channels: int) -> "NetworkConfig":
        out = copy.deepcopy(self)
        out.down_channels = out.up_channels = channels
        return out

    def build(self, output_channels: int, memory_format=None) -> "SkipNet":
        return SkipNet(self, output_channels, channels_last_head=memory_format == torch.channels_last)


class Swish(nn.Module):
    """x * sigmoid(x), as in the original code's 'Swish' option."""

    def forward(self, x):
        return x * torch.sigmoid(x)


def _activation(name: str) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "swish":
        return Swish()
    if name == "elu":
        return nn.ELU(inplace=True)
    return nn.Identity()


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, track_running_stats=False)


def lanczos_kernel(support: int, factor: int = 2) -> torch.Tensor:
    """Separable 2D Lanczos kernel for downsampling by ``factor`` with a half-pixel phase."""
    width = 2 * support * factor
    centre = (width - 1) / 2.0
    taps = []
    for i in range(width):
        x = (i - centre) / factor
        if abs(x) < 1e-12:
            taps.append(1.0)
        elif abs(x) >= support:
            taps.append(0.0)
        else:
            px = math.pi * x
            taps.append(support * math.sin(px) * math.sin(px / support) / (px * px))
    k1 = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k1, k1)
    return k2 / k2.sum()


class LanczosDown(nn.Module):
    """Fixed (not learned) depthwise Lanczos low-pass, then stride 2; keeps size // 2."""

    def __init__(self, channels: int, support: int):
        super().__init__()
        kernel = lanczos_kernel(support)
        self.register_buffer("weight", kernel.expand(channels, 1, *kernel.shape).clone())
        self.pad = (kernel.shape[-1] - 2) // 2
        self.channels = channels

    def forward(self, x):
        x = F.pad(x, (self.pad,) * 4, mode="replicate")
        return F.conv2d(x, self.weight.to(x.dtype), stride=2, groups=self.channels)


def _conv(c_in: int, c_out: int, kernel: int, padding: str, bias: bool,
          stride: int = 1, downsample: str = "stride") -> nn.Module:
    """Conv with the original's padding rule, optionally followed by a downsampler."""
    layers: list[nn.Module] = []
    conv_stride = stride if downsample == "stride" else 1
    pad = (kernel - 1) // 2
    if padding == "reflection" and pad > 0:
        layers.append(nn.ReflectionPad2d(pad))
        layers.append(nn.Conv2d(c_in, c_out, kernel, conv_stride, padding=0, bias=bias))
    else:
        layers.append(nn.Conv2d(c_in, c_out, kernel, conv_stride, padding=pad, bias=bias))
    if stride != 1 and downsample != "stride":
        if downsample == "avg":
            layers.append(nn.AvgPool2d(stride, stride))
        elif downsample == "max":
            layers.append(nn.MaxPool2d(stride, stride))
        else:
            layers.append(LanczosDown(c_out, support=int(downsample[-1])))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def _unit(c_in, c_out, kernel, cfg: NetworkConfig, stride=1, downsample="stride") -> nn.Sequential:
    """conv -> BatchNorm -> activation."""
    return nn.Sequential(
        _conv(c_in, c_out, kernel, cfg.padding, cfg.bias, stride, downsample),
        _bn(c_out),
        _activation(cfg.activation),
    )


class _Scale(nn.Module):
    """One level of the hourglass: skip branch, down branch (with the deeper levels), join."""

    def __init__(self, i: int, c_in: int, cfg: NetworkConfig, deeper: nn.Module | None):
        super().__init__()
        n_d, n_u, n_s = cfg.down_channels[i], cfg.up_channels[i], cfg.skip_channels[i]
        self.skip = _unit(c_in, n_s, cfg.skip_kernel[i], cfg) if n_s > 0 else None
        self.down = nn.Sequential(
            _unit(c_in, n_d, cfg.down_kernel[i], cfg, stride=2, downsample=cfg.downsample[i]),
            _unit(n_d, n_d, cfg.down_kernel[i], cfg),
        )
        self.deeper = deeper
        mode = cfg.upsample[i]
        self.upsample = nn.Upsample(scale_factor=2, mode=mode,
                                    align_corners=False if mode == "bilinear" else None)
        k = cfg.up_channels[i + 1] if deeper is not None else n_d
        join = [_bn(n_s + k), _unit(n_s + k, n_u, cfg.up_kernel[i], cfg)]
        if cfg.conv_after_join:
            join.append(_unit(n_u, n_u, 1, cfg))
        self.join = nn.Sequential(*join)

    def forward(self, x):
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        y = self.upsample(y)
        if self.skip is not None:
            s = self.skip(x)
            if s.shape[-2:] != y.shape[-2:]:
                s, y = _centre_crop_pair(s, y)
            y = torch.cat([s, y], dim=1)
        return self.join(y)


def _centre_crop_pair(a: torch.Tensor, b: torch.Tensor):
    h = min(a.shape[-2], b.shape[-2])
    w = min(a.shape[-1], b.shape[-1])

    def crop(t):
        dh = (t.shape[-2] - h) // 2
        dw = (t.shape[-1] - w) // 2
        return t[..., dh:dh + h, dw:dw + w]

    return crop(a), crop(b)


class SkipNet(nn.Module):
    """The full hourglass: nested scales, a 1x1 output head and an optional sigmoid."""

    def __init__(self, config: NetworkConfig, output_channels: int, channels_last_head: bool = False):
        super().__init__()
        cfg = config.validate()
        if output_channels < 1:
            raise DIPError(f"output_channels must be >= 1 (got {output_channels}).")
        self.config = cfg
        deeper = None
        for i in reversed(range(cfg.scales)):
            c_in = cfg.input_channels if i == 0 else cfg.down_channels[i - 1]
            deeper = _Scale(i, c_in, cfg, deeper)
        self.body = deeper
        self.head = nn.Conv2d(cfg.up_channels[0], output_channels, 1, bias=cfg.bias)
        self.sigmoid = cfg.sigmoid
        self.head_as_gemm = channels_last_head  # see _head

    def forward(self, z):
        y = self.body(z)
        if y.dtype in (torch.bfloat16, torch.float16):
            # Mixed precision: the body ran in bf16/fp16; the 1x1 head, the sigmoid (and
            # the loss) stay in float32 so the output is not quantised to 8 mantissa bits.
            with torch.autocast(device_type=y.device.type, enabled=False):
                y = self._head(y.float())
        else:
            y = self._head(y)
        return torch.sigmoid(y) if self.sigmoid else y

    def _head(self, y):
        """The 1x1 output conv; on channels_last data, as the GEMM over channels it is.

        Same numbers, but a CPU 1x1 conv with few output channels on
        channels_last input falls back to a slow im2col path (measured 7.0 vs
        4.3 ms forward+backward at 128x128).
        """
        if not self.head_as_gemm:
            return self.head(y)
        weight = self.head.weight.flatten(1)
        return F.linear(y.permute(0, 2, 3, 1), weight, self.head.bias).permute(0, 3, 1, 2)
