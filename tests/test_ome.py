"""OME files keep what they say: an OME-TIFF's whole OME-XML is carried to its answers, changed
only where the answer differs (its size after super-resolution, its pixel type)."""

import numpy as np
import pytest
import tifffile

from src_core.cli import main

NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


def ome_xml(size: int, planes: int) -> str:
    """An OME-XML with what tifffile's own writer drops: an instrument, an experimenter, a
    structured annotation, channel names and colours, a date and a description."""
    return (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{NS}" UUID="urn:uuid:1b4e28ba-2fa1-11d2-883f-'
            f'0016d3cca427"><Instrument ID="Instrument:0"><Microscope Manufacturer="Zeiss" Model="LSM 980"/>'
            f'<Objective ID="Objective:0" NominalMagnification="63" LensNA="1.4"/></Instrument>'
            f'<Experimenter ID="Experimenter:0" FirstName="Ada" LastName="Lovelace"/>'
            f'<Image ID="Image:0" Name="cells 3"><AcquisitionDate>2026-05-04T03:02:01</AcquisitionDate>'
            f'<Description>fixed HeLa, DAPI</Description><ExperimenterRef ID="Experimenter:0"/>'
            f'<InstrumentRef ID="Instrument:0"/>'
            f'<Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SizeX="{size}" SizeY="{size}" '
            f'SizeZ="{planes}" SizeC="1" SizeT="1" PhysicalSizeX="0.1" PhysicalSizeXUnit="µm" '
            f'PhysicalSizeY="0.1" PhysicalSizeYUnit="µm" PhysicalSizeZ="0.5" PhysicalSizeZUnit="µm">'
            f'<Channel ID="Channel:0:0" Name="DAPI" Color="65535" SamplesPerPixel="1"/>'
            f'<TiffData IFD="0" PlaneCount="{planes}"/></Pixels></Image>'
            f'<StructuredAnnotations><MapAnnotation ID="Annotation:0"><Value><M K="stain">DAPI</M></Value>'
            f'</MapAnnotation></StructuredAnnotations></OME>')


@pytest.mark.parametrize("task, factor", [("denoise", 1), ("sr", 2)])
def test_an_ome_tiffs_xml_comes_back_whole_with_only_the_answers_changes(tmp_path, task, factor):
    size, planes = 32, 2
    data = (np.random.default_rng(0).random((planes, size, size)) * 4000).astype(np.uint16)
    source = tmp_path / "cells.ome.tif"
    tifffile.imwrite(source, data, description=ome_xml(size, planes).encode(), metadata=None)
    before = source.read_bytes()
    args = [task, str(source), "--preset", "cpu", "--iterations", "2", "--set", "scales=2", "-o", str(tmp_path)]
    assert main(args + (["--factor", "2"] if task == "sr" else [])) == 0
    assert source.read_bytes() == before  # the input is only read
    with tifffile.TiffFile(tmp_path / "cells.ome_restored.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        assert tif.series[0].shape == (planes, size * factor, size * factor) and tif.series[0].dtype == np.uint16
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]
    image, pixels = ome["Image"], ome["Image"]["Pixels"]
    assert ome["Instrument"]["Microscope"]["Model"] == "LSM 980" and ome["Instrument"]["Objective"]["LensNA"] == 1.4
    assert ome["Experimenter"]["LastName"] == "Lovelace" and image["ExperimenterRef"]["ID"] == "Experimenter:0"
    assert ome["StructuredAnnotations"]["MapAnnotation"]["Value"]["M"]["value"] == "DAPI"
    assert image["Name"] == "cells 3" and image["AcquisitionDate"] == "2026-05-04T03:02:01"
    assert image["Description"] == "fixed HeLa, DAPI"
    assert pixels["Channel"]["Name"] == "DAPI" and pixels["Channel"]["Color"] == 65535
    assert (pixels["SizeX"], pixels["SizeY"], pixels["SizeZ"]) == (size * factor, size * factor, planes)
    assert pixels["PhysicalSizeX"] == pytest.approx(0.1 / factor) and pixels["PhysicalSizeZ"] == 0.5
    assert pixels["PhysicalSizeXUnit"] == "µm" and pixels["Type"] == "uint16"
    assert ome["UUID"] != "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427"  # another file
