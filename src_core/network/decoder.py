"""The Deep Decoder (Heckel & Hand, ICLR 2019): an untrained generator with no spatial convolution.

From a fixed random code of ``channels`` x (H / 2**scales) x (W / 2**scales), each of
``scales + 1`` layers mixes channels with a 1x1 convolution, upsamples x2 bilinearly (all
but the last layer), applies a ReLU and normalises each channel over its pixels with a
learned scale and shift; a 1x1 convolution to the output channels and a sigmoid end it
(layer order and defaults as in the authors' code: docs/paper.md §8).  With 64 channels and
5 upsamplings it has about 25 thousand weights, ten times fewer than a 512x512 image has
pixels: the prior is that few weights, where the skip net's is its convolutional structure.

>>> from src_core.network import DecoderConfig, count_parameters
>>> count_parameters(DecoderConfig().build(output_channels=3))   # 6 layers of 64 channels
25536
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .base import MAX_CHANNELS, MAX_SCALES, Generator, check_choice, check_flags, whole_in

UPSAMPLE_MODES = ("bilinear", "nearest")


@dataclass
class DecoderConfig(Generator):
    """The Deep Decoder's settings: ``scales`` upsamplings, ``channels`` per layer."""

    scales: int = 5
    channels: int = 64
    input_channels: int = 64
    upsample: str = "bilinear"
    sigmoid: bool = True
    bias: bool = False

    architecture = "decoder"

    def validate(self) -> "DecoderConfig":
        whole_in("scales", self.scales, 1, MAX_SCALES)
        whole_in("channels", self.channels, 1, MAX_CHANNELS)
        whole_in("input_channels", self.input_channels, 1, MAX_CHANNELS)
        check_choice("upsample", self.upsample, UPSAMPLE_MODES)
        check_flags(self, ("sigmoid", "bias"))
        return copy.deepcopy(self)

    def input_shape(self, height: int, width: int) -> tuple[int, int, int]:
        m = self.multiple()
        return self.input_channels, height // m, width // m

    def width(self) -> int:
        return self.channels

    def with_width(self, channels: int) -> "DecoderConfig":
        out = copy.deepcopy(self)
        out.channels = channels
        if self.input_channels == self.channels:   # the code's channels follow the layers'
            out.input_channels = channels
        return out

    def build(self, output_channels: int, memory_format=None) -> "DeepDecoder":
        return DeepDecoder(self, output_channels)


class DeepDecoder(nn.Module):
    def __init__(self, config: DecoderConfig, output_channels: int):
        super().__init__()
        cfg = config.validate()
        layers: list[nn.Module] = []
        c_in = cfg.input_channels
        for i in range(cfg.scales + 1):
            layers.append(nn.Conv2d(c_in, cfg.channels, 1, bias=cfg.bias))
            if i < cfg.scales:
                layers.append(nn.Upsample(scale_factor=2, mode=cfg.upsample,
                                          align_corners=False if cfg.upsample == "bilinear" else None))
            layers += [nn.ReLU(inplace=True), nn.BatchNorm2d(cfg.channels, track_running_stats=False)]
            c_in = cfg.channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cfg.channels, output_channels, 1, bias=cfg.bias)
        self.sigmoid = cfg.sigmoid
        self.config = cfg

    def forward(self, z):
        y = self.body(z)
        if y.dtype in (torch.bfloat16, torch.float16):  # the head and sigmoid in float32, as SkipNet
            with torch.autocast(device_type=y.device.type, enabled=False):
                y = self.head(y.float())
        else:
            y = self.head(y)
        return torch.sigmoid(y) if self.sigmoid else y
