"""napari-dip: Deep Image Prior restoration as a napari plugin.

The dock widget lives in :mod:`napari_dip._widget`; from the napari console,
:func:`restore_layer` restores a layer with the same options, synchronously::

    import napari_dip
    napari_dip.restore_layer(viewer, "kate (text-corrupted)", "kate mask", preset="cpu")

Imports are lazy so that napari's plugin discovery does not load torch.
"""

__version__ = "0.1.0"
__all__ = ["DIPWidget", "restore_layer", "__version__"]


def __getattr__(name):
    if name == "restore_layer":
        from ._scripting import restore_layer

        return restore_layer
    if name == "DIPWidget":
        from ._widget import DIPWidget

        return DIPWidget
    raise AttributeError(f"module 'napari_dip' has no attribute {name!r}")
