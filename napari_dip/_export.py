"""What a finished run leaves behind outside napari: files, and the code that redoes it.

Both read only the result layer's metadata (written by ``_layers.OutputLayers``),
so a run saved or copied later, from a reopened session, gives the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import src_core
from src_core import DIPError
from src_core.io import json_default, write_image, write_text

from ._curves import render_curves
from ._layers import ROLE_KEY

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def _result_metadata(layer) -> dict:
    meta = getattr(layer, "metadata", None) or {}
    if meta.get(ROLE_KEY) != "result":
        name = getattr(layer, "name", layer)
        raise DIPError(f"'{name}' is not a Deep Image Prior result layer; choose a layer a run "
                       "added (named '... DIP').")
    return meta


def run_files(path) -> dict:
    """The files :func:`save_run` writes for an image path: image, history JSON, curve PNG."""
    path = Path(path)
    return {"image": path, "history": path.with_name(path.stem + ".dip.json"),
            "curve": path.with_name(path.stem + ".dip-psnr.png")}


def save_run(layer, path, overwrite: bool = False) -> dict:
    """Write the result (in the input's dtype), its history JSON and its PSNR curve.

    The JSON holds the full configuration, every slice's history and the
    run's notes, so the run can be repeated.  Existing files are refused
    unless ``overwrite`` (the file dialog has already asked); each file is
    written atomically.
    """
    meta = _result_metadata(layer)
    files = run_files(path)
    suffix = files["image"].suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DIPError(f"save the result as TIFF or PNG ({', '.join(IMAGE_SUFFIXES)}); "
                       f"got {files['image'].name!r}.")
    data = np.asarray(layer.data)
    if suffix == ".png" and data.dtype not in (np.uint8, np.uint16):
        raise DIPError(f"PNG holds 8- or 16-bit integers but the result is {data.dtype}; save it "
                       "as .tif to keep its values.")
    if not files["image"].parent.is_dir():
        raise DIPError(f"the folder {str(files['image'].parent)!r} does not exist.")
    taken = [str(p) for p in files.values() if p.exists()]
    if taken and not overwrite:
        raise DIPError(f"{', '.join(taken)} already exist; choose another name.")
    record = {key: meta.get(key) for key in ("task", "task_options", "option_layers", "config", "notes",
                                             "stopped", "mask", "reference", "slice_index", "region",
                                             "label", "keep_observed", "histories")}
    record.update(source=meta.get("source"), result=layer.name, napari_dip=src_core.__version__,
                  python=python_call(layer))
    write_image(files["image"], data)
    write_text(files["history"], json.dumps(record, indent=1, default=json_default))
    histories = meta.get("histories") or []
    many = len(histories) > 1
    curves = [(f"slice {(h.get('part') if h.get('part') is not None else i) + 1}" if many else "",
               h["iterations"], h["psnr"], h["fit_psnr"])
              for i, h in enumerate(histories) if h]
    if any(len(c[1]) for c in curves):
        write_image(files["curve"], render_curves(curves, f"{layer.name}: PSNR"))
    else:
        files.pop("curve")
    return files


def _differences(config: dict) -> dict:
    """The settings of ``config`` that differ from its preset's, flat (``scales=4``)."""
    name = config.get("preset", "custom")
    if name not in src_core.PRESETS:
        return None
    preset = src_core.preset(name)
    architecture = config.get("network", {}).get("architecture", preset.network.architecture)
    base = preset.replace(architecture=architecture).to_dict()  # another network: from its defaults
    out = {k: v for k, v in config.items() if k not in ("network", "preset") and base.get(k) != v}
    if architecture != preset.network.architecture:
        out["network.architecture"] = architecture
    for k, v in config.get("network", {}).items():
        if base["network"].get(k) != v:
            out[f"network.{k}"] = v
    return out


def python_call(layer) -> str:
    """The console code that repeats the run with ``src_core.restore`` (``viewer`` in scope)."""
    meta = _result_metadata(layer)
    source = meta.get("source")
    task = meta.get("task")
    config = meta.get("config") or {}
    index = ""
    if meta.get("slice_index"):
        index = "[" + ", ".join(str(i) for i in meta["slice_index"]) + "]"
    lines = ["import src_core", f"image = viewer.layers[{source!r}].data{index}"]
    region = meta.get("region")
    crop = ""
    if region:
        (r0, r1), (c0, c1) = region
        rgb = bool(getattr(layer, "rgb", False))
        crop = f"[..., {r0}:{r1}, {c0}:{c1}{', :' if rgb else ''}]"
    args = ["image" + crop]
    spec = src_core.get_task(task)
    if meta.get("mask") and spec.mask != "random":  # (a random task draws its own)
        label = meta.get("label")
        lines.append(f"labels = viewer.layers[{meta['mask']!r}].data{index if meta.get('mask_sliced') else ''}")
        lines.append(f"mask = src_core.mask_from_labels(labels{', ' + str(label) if label else ''})"
                     "  # painted = to fill")
        plane_crop = f"[..., {region[0][0]}:{region[0][1]}, {region[1][0]}:{region[1][1]}]" if region else ""
        args.append("mask" + (crop if meta.get("mask_channels") else plane_crop))
    args.append(f"task={task!r}")
    args.extend(f"{k}={v!r}" for k, v in (meta.get("task_options") or {}).items())
    args.extend(f"{k}={v!r}" for k, v in (meta.get("volume") or {}).items())  # a z-stack's 3D partner
    for name, (layer_name, plane) in (meta.get("option_layers") or {}).items():  # e.g. a bead image's PSF
        args.append(f"{name}=viewer.layers[{layer_name!r}].data" + ("" if plane is None else f"[{plane}]"))
    if meta.get("reference"):
        lines.append(f"reference = viewer.layers[{meta['reference']!r}].data{index}")
        args.append("reference=reference" + crop)
    if getattr(layer, "rgb", False):
        args.append("channel_axis=-1")
    else:
        args.append("channel_axis=None")
    if spec.keep_observed:
        args.append(f"keep_observed={bool(meta.get('keep_observed'))}")
    changed = _differences(config)
    if changed is None:
        lines.append(f"config = src_core.RunConfig.from_dict({config!r})")
        args.append("config=config")
    else:
        args.append(f"preset={config.get('preset')!r}")
        flat = {k.split('.', 1)[1] if k.startswith("network.") else k: v for k, v in changed.items()}
        if len(flat) == len(changed) and all(k.isidentifier() for k in flat):
            args.extend(f"{k}={v!r}" for k, v in flat.items())
        else:
            args.append(f"**{changed!r}")
    lines.append("result = src_core.restore(" + ", ".join(args) + ")")
    output = "result.image"
    if region:
        lines.append(f"whole = viewer.layers[{source!r}].data{index}.copy()")
        lines.append(f"whole{crop} = result.image")
        output = "whole"
    lines.append(f"viewer.add_image({output}, name={layer.name + ' (again)'!r})")
    return "\n".join(lines)
