"""Reading and writing images and the files that travel with a result."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DIPError

DATA_DIR = Path(__file__).resolve().parent / "data"


def read_image(path, what: str = "image") -> np.ndarray:
    """Read PNG/JPEG/TIFF (via imageio) or .npy, with a clear error naming the file (``what`` it
    was given as: image, mask, reference)."""
    path = Path(path)
    if path.is_dir():
        raise DIPError(f"the {what} {path} is a folder, not a file; give one file (`dip batch` takes "
                       "folders of images).")
    if not path.is_file():
        raise DIPError(f"{what} file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as exc:  # the reader libraries raise many types
        reason = str(exc).split("\n")[0][:160]
        if "plugin" in reason.lower() or "backend" in reason.lower() or "format" in reason.lower():
            reason = "its content is not a format that can be read as an image"
        raise DIPError(f"could not read {path} as an image ({reason}); give a PNG, JPEG or TIFF "
                       "file, or a .npy array.") from None


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: setting it to read it is not thread-safe


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    A crash, a full disk or Ctrl-C leaves either the old file or the new
    one, never a truncated file; the temporary file is removed on failure.
    The temporary name keeps the suffix, so writers that infer the format
    from it (imageio, matplotlib) still work.  The file gets the permissions
    a plain ``open`` would give (the umask's; a replaced file's own), not
    the temporary file's owner-only ones: colleagues on a shared server read results.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # after the writer, which may have made the file anew
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> Path:
    """Write a text file atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_image(path, image: np.ndarray, like=None) -> Path:
    """Write an image atomically; float data in [0, 1] is stored as 8-bit for PNG/JPEG.
    ``like``: the TIFF the image was made from; a TIFF written with the same axes (Y and X may
    be larger) carries its metadata (:func:`tiff_metadata`)."""
    import imageio.v3 as iio

    path = Path(path)
    data = np.asarray(image)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg") and data.dtype.kind == "f":
        data = (np.clip(data, 0, 1) * 255 + 0.5).astype(np.uint8)
    if data.dtype == bool:
        data = data.astype(np.uint8) * 255
    metadata = None
    if like is not None and path.suffix.lower() in (".tif", ".tiff"):
        metadata = _metadata_for(like, data.shape, data.dtype)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, data)
        elif metadata is not None:
            import tifffile

            tifffile.imwrite(tmp, data, **metadata)
        else:
            iio.imwrite(tmp, data, extension=path.suffix.lower() or None)
    return path


@dataclass
class FileForm:
    """What the outputs take from the input file beyond its pixels: a PNG's alpha plane (put
    back unchanged), a TIFF's metadata (pixel size; an ImageJ or OME TIFF's axes and units)."""

    alpha: np.ndarray | None = None
    tiff: Path | None = None
    stack: str | None = None            # "z" or "t" where an ImageJ or OME TIFF says which its stack is
    spacing: tuple | None = None        # its voxel spacing (z, y, x) in one unit, where it states all three

    def write(self, path, image: np.ndarray) -> Path:
        """:func:`write_image` of an image made from the input, in the input's form."""
        return write_image(path, image if self.alpha is None else with_alpha(image, self.alpha), like=self.tiff)


def read_input(path, channel_axis="auto", what: str = "image"):
    """An image file as :func:`src_core.restore` takes it: ``(pixels, channel_axis, form)``.

    With ``channel_axis="auto"`` a PNG's alpha is set aside (into the :class:`FileForm` the
    outputs are written in) and an ImageJ or OME TIFF's channel axis is the one it states.
    """
    image = read_image(path, what)
    alpha = None
    if channel_axis == "auto":
        image, alpha = split_alpha(path, image)
        axes = tiff_axes(path)
        if axes is not None and "C" in axes and len(axes) == image.ndim:
            channel_axis = axes.index("C")
    tiff = Path(path) if Path(path).suffix.lower() in (".tif", ".tiff") else None
    return image, channel_axis, FileForm(alpha, tiff, *tiff_volume(path))


def split_alpha(path, data: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A PNG's grey+alpha or RGBA pixels as (colour, alpha): transparency is not image content
    to restore (a PNG's 2 or 4 channels always end in alpha; a TIFF's need not)."""
    if Path(path).suffix.lower() != ".png" or data.ndim != 3 or data.shape[-1] not in (2, 4):
        return data, None
    colour = data[..., :-1]
    return (colour[..., 0] if colour.shape[-1] == 1 else colour), data[..., -1]


def with_alpha(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``image`` with the input's alpha plane put back (repeated to the size of a larger answer)."""
    fy, fx = image.shape[0] // alpha.shape[0], image.shape[1] // alpha.shape[1]
    alpha = np.repeat(np.repeat(alpha, fy, axis=0), fx, axis=1)
    planes = image if image.ndim == 3 else image[..., None]
    return np.concatenate([planes, alpha[..., None].astype(planes.dtype)], axis=-1)


@contextlib.contextmanager
def _open_tiff(path):
    """The open TIFF at ``path``, or None when it is not one tifffile reads (the image reader
    then says why)."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        yield None
        return
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception:
        yield None
        return
    with tif:
        yield tif


def tiff_axes(path) -> str | None:
    """The axes an ImageJ or OME TIFF's first series states ('ZCYX', 'TYXS'...), or None (a plain
    TIFF's axes are tifffile's guess, not the file's word)."""
    with _open_tiff(path) as tif:
        return tif.series[0].axes if tif is not None and (tif.is_imagej or tif.is_ome) else None


#: lengths in micrometres, for a TIFF whose axes state their sizes in different units
_MICROMETRES = {"nm": 1e-3, "um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "micron": 1.0, "mm": 1e3, "cm": 1e4,
                "m": 1e6}


def tiff_volume(path) -> tuple[str | None, tuple | None]:
    """(what an ImageJ or OME TIFF's one stack axis is, "z" or "t" (None: no such axis, or more
    than one), and its voxel spacing (z, y, x) for a z-stack that states all three sizes)."""
    with _open_tiff(path) as tif:
        if tif is None or not (tif.is_imagej or tif.is_ome):
            return None, None
        stack_axes = [a for a in tif.series[0].axes if a not in "YXCS"]
        if len(stack_axes) != 1 or stack_axes[0] not in "ZT":
            return None, None
        if stack_axes[0] == "T":
            return "t", None
        return "z", _voxel_spacing(tif)


def _voxel_spacing(tif) -> tuple | None:
    """An OME or ImageJ TIFF's (z, y, x) voxel size in micrometres (or in its one unit), or None."""
    import tifffile

    if tif.is_ome:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        sizes = [pixels.get(f"PhysicalSize{a}") for a in "ZYX"]
        units = [pixels.get(f"PhysicalSize{a}Unit", "\u00b5m") for a in "ZYX"]
        if None in sizes or any(u not in _MICROMETRES for u in units):
            return None
        return tuple(float(v) * _MICROMETRES[u] for v, u in zip(sizes, units))
    z = tif.imagej_metadata.get("spacing")
    tags = tif.pages[0].tags
    if z is None or "XResolution" not in tags or "YResolution" not in tags:
        return None
    per_unit = [tags[t].value for t in ("YResolution", "XResolution")]  # pixels per unit, as rationals
    if any(num == 0 for num, _ in per_unit):
        return None
    return (float(z), *(den / num for num, den in per_unit))


def _metadata_for(source, shape: tuple, dtype) -> dict | None:
    """:func:`tiff_metadata` for an image of ``shape`` made from the TIFF ``source`` (Y and X maybe
    larger); None when ``source`` is no TIFF or the image has other axes."""
    with _open_tiff(source) as tif:
        if tif is None:
            return None
        axes, own = tif.series[0].axes, tif.series[0].shape
        if len(shape) != len(own) or "Y" not in axes:
            return None
        return tiff_metadata(tif, shape[axes.index("Y")] / own[axes.index("Y")], dtype)


def tiff_metadata(tif, factor: float = 1.0, dtype=None) -> dict:
    """``tifffile.imwrite`` keywords that carry an open TIFF's metadata to an image made from it
    whose pixels are ``factor`` times smaller, of ``dtype`` (default: the input's): the
    resolution (any TIFF); an OME-TIFF's whole OME-XML (channel names, instrument, dates,
    annotations), changed only where the image differs (:func:`carried_ome_xml`); ImageJ's
    axes, spacing, units and time increment (so a result opens in Fiji or napari at the
    input's scale)."""

    def times(resolution):  # a rational, pixels per unit
        numerator, denominator = resolution
        return (int(round(numerator * factor)), int(denominator)) if factor != 1 else resolution

    first, series = tif.pages[0], tif.series[0]
    kwargs = {}
    if "XResolution" in first.tags:
        kwargs = dict(resolution=tuple(times(first.tags[t].value) for t in ("XResolution", "YResolution")),
                      resolutionunit=first.tags["ResolutionUnit"].value if "ResolutionUnit" in first.tags
                      else None)
    if tif.is_ome:
        xml = carried_ome_xml(tif.ome_metadata, factor, series.dtype if dtype is None else dtype)
        # the description is the OME-XML itself; tifffile writes its own only when given metadata
        kwargs.update(description=xml.encode(), metadata=None, ome=False,
                      photometric="rgb" if series.axes.endswith("S") else "minisblack")
    elif tif.is_imagej:
        kwargs.update(imagej=True, metadata={k: v for k, v in tif.imagej_metadata.items()
                                             if k in ("spacing", "unit", "finterval")}
                      | {"axes": series.axes})
    return kwargs


#: numpy's dtypes by OME's pixel type names
_OME_TYPES = {"uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "int8": "int8", "int16": "int16",
              "int32": "int32", "float32": "float", "float64": "double"}


def carried_ome_xml(xml: str, factor: float, dtype) -> str:
    """An OME-XML for the answer of the image it describes: the same document (every element
    and namespace kept), but for the first Image's Pixels sizes in Y and X (times ``factor``),
    physical pixel sizes (divided by it) and pixel type (``dtype``); a new file UUID; no other
    Images (the answer holds the first series only) and no links to other files' UUIDs."""
    import io
    import uuid
    import xml.etree.ElementTree as ET

    for prefix, uri in dict(node for _, node in ET.iterparse(io.StringIO(xml), events=["start-ns"])).items():
        ET.register_namespace(prefix, uri)
    root = ET.fromstring(xml)
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    images = root.findall(f"{ns}Image")
    for other in images[1:]:
        root.remove(other)
    pixels = images[0].find(f"{ns}Pixels")
    for axis in "XY":
        pixels.set(f"Size{axis}", str(int(round(int(pixels.get(f"Size{axis}")) * factor))))
        size = pixels.get(f"PhysicalSize{axis}")
        if size is not None and factor != 1:
            pixels.set(f"PhysicalSize{axis}", f"{float(size) / factor:.10g}")
    name = np.dtype(dtype).name
    if name not in _OME_TYPES:
        raise DIPError(f"an OME-TIFF cannot hold {name} pixels; write another format.")
    pixels.set("Type", _OME_TYPES[name])
    for data in pixels.findall(f"{ns}TiffData"):
        for link in data.findall(f"{ns}UUID"):
            data.remove(link)
    if "UUID" in root.attrib:
        root.set("UUID", f"urn:uuid:{uuid.uuid4()}")
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def is_zarr(path) -> bool:
    """A Zarr store (array or group, format 2 or 3) on disk."""
    path = Path(path)
    return path.is_dir() and (path.suffix.lower() == ".zarr" or (path / "zarr.json").is_file()
                              or (path / ".zarray").is_file() or (path / ".zgroup").is_file())


def check_writable(folder) -> Path:
    """Create ``folder`` and prove it takes a file, before any heavy work.

    A probe file is written and removed: permission bits alone miss
    read-only mounts, full disks and a root user's view of permissions.
    A Zarr store is refused as the folder: the outputs would become nodes of
    the user's store (a store is only ever read; its answer is a new store).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DIPError(f"-o {folder} is a file; -o takes the folder the outputs go into (their names "
                       "come from --name or the input's).")
    if is_zarr(folder):
        raise DIPError(f"-o {folder} is a Zarr store; the outputs would be written into it. A store is "
                       "only read: give a plain folder, and its answer is written there as "
                       "<name>_restored.zarr.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "write-check.tmp") as tmp:
            tmp.write_bytes(b"0" * 4096)
        os.unlink(folder / "write-check.tmp")
    except OSError as exc:
        raise DIPError(f"cannot write to the output folder {folder}: {exc.strerror or exc}; "
                       "choose another with -o.") from None
    return folder


def json_default(obj):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as plain numbers."""
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def data_path(name: str) -> Path:
    """Path of an image shipped with the package, e.g. ``data_path('table1/barbara.png')``."""
    path = DATA_DIR / name
    if not path.is_file():
        raise DIPError(f"no shipped image {name!r} (looked in {path.parent}).")
    return path


def load_sample(name: str) -> np.ndarray:
    """A shipped image as an array, e.g. ``load_sample('dip/kate.png')``."""
    return read_image(data_path(name))
