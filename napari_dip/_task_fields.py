"""The form's fields for the tasks' own options, made from the task registry.

Each :class:`src_core.tasks.Option` gets one field (a spin box of its kind and
range) and, where an image may stand for the value, a layer picker; a field is
shown while the chosen task has that option.  A new task or option in
:mod:`src_core.tasks` appears here without a change to the plugin.
"""

from __future__ import annotations

import numpy as np
from magicgui import widgets

import src_core
from src_core.tasks import TASKS_BY_NAME, Option


class TaskFields:
    """One field per task option (options of the same name share it) and its layer picker."""

    def __init__(self, image_choices):
        self.fields: dict[str, widgets.ValueWidget] = {}
        self.layers: dict[str, widgets.ComboBox] = {}   # options an image may stand for
        for task in TASKS_BY_NAME.values():
            for option in task.options:
                if option.name in self.fields:
                    continue
                self.fields[option.name] = _number_field(option)
                if option.image:
                    self.layers[option.name] = widgets.ComboBox(
                        label=option.image, choices=image_choices, nullable=True,
                        tooltip=f"An image layer for {option.help.split(':')[0]} (2D, or a 3D stack: "
                                "whole for a z-stack run on all slices, else its in-focus plane). "
                                f"Empty: the {option.label or option.name} above.")

    @property
    def widgets(self) -> list:
        """Every field, each option's number before its layer picker."""
        return [w for name in self.fields for w in (self.fields[name], self.layers.get(name)) if w is not None]

    @property
    def layer_pickers(self) -> list:
        return list(self.layers.values())

    def field(self, name: str) -> widgets.ValueWidget:
        """The number field of option ``name`` (its layer picker: :attr:`layers`)."""
        return self.fields[name]

    def show(self, task: str) -> None:
        """Show the fields of ``task``'s options, hide the others."""
        names = {o.name for o in src_core.get_task(task).options}
        for name in self.fields:
            self.fields[name].visible = name in names
            if name in self.layers:
                self.layers[name].visible = name in names

    def _chosen_layer(self, name: str):
        """The layer chosen to stand for option ``name`` (None: its number stands)."""
        return self.layers[name].value if name in self.layers else None

    def layer_sources(self, task: str) -> dict:
        """The options of ``task`` a layer stands for: name -> (the layer's name, None: all of it),
        so that what the run used can be named again (the capture names the plane it takes of a
        3D stack for a run that is not a z-stack's)."""
        sources = {}
        for option in src_core.get_task(task).options:
            layer = self._chosen_layer(option.name)
            if layer is not None:
                sources[option.name] = (str(layer.name), None)
        return sources

    def values(self, task: str) -> dict:
        """``task``'s options as the fields hold them; a chosen layer stands for its option's number."""
        values = {}
        for option in src_core.get_task(task).options:
            layer = self._chosen_layer(option.name)
            values[option.name] = option.kind(self.fields[option.name].value) if layer is None else _plane(layer)
        return values


def _number_field(option: Option) -> widgets.ValueWidget:
    kind = widgets.SpinBox if option.kind is int else widgets.FloatSpinBox
    extra = {} if option.kind is int else {"step": 0.1}
    return kind(label=option.label or option.name, value=option.default, min=option.low, max=option.high,
                tooltip=option.help[:1].upper() + option.help[1:] + ".", **extra)


def _plane(layer) -> np.ndarray:
    """A layer's data as the image that stands for an option: an RGB image's mean over colour
    (a PSF has no colour), anything else as it is (a 3D stack whole)."""
    data = np.asarray(layer.data, dtype=np.float64)
    return data.mean(axis=-1) if getattr(layer, "rgb", False) else data
