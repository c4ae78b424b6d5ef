"""Inputs as ITK and 3D Slicer users have them: a DICOM series folder (SimpleITK's
ImageSeriesReader) and Slicer markups (.fcsv, .mrk.json) for landmarks."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from regkit.errors import InputError
from regkit.io.images import load_image
from regkit.metrics import read_landmarks


def _write_dicom_series(image: sitk.Image, folder) -> None:
    """SimpleITK's own recipe (Examples/DicomSeriesFromArray): one file per slice with the
    geometry tags ITK reads back."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125." + time.strftime("%H%M%S")
    direction = image.GetDirection()
    orientation = "\\".join(map(str, (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])))
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        s.SetMetaData("0008|0060", "MR")
        s.SetMetaData("0020|000d", uid + ".1")
        s.SetMetaData("0020|000e", uid + ".2")
        s.SetMetaData("0020|0037", orientation)
        s.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        s.SetMetaData("0020|0013", str(k))
        s.SetMetaData("0018|0050", str(image.GetSpacing()[2]))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(s)


def test_dicom_series_folder_reads_as_the_same_image(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 1000, size=(9, 12, 10)).astype(np.int16)  # (Z, Y, X)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 1.1, 2.5))
    image.SetOrigin((-20.0, 14.0, 7.5))
    c, s = np.cos(0.2), np.sin(0.2)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / "volume.nii.gz"))
    import locale

    before = locale.setlocale(locale.LC_ALL)
    _write_dicom_series(image, tmp_path / "series")
    locale.setlocale(locale.LC_ALL, before)  # GDCM's writer sets the C locale (ASCII text for the rest of the process)
    from_dicom, from_nifti = load_image(tmp_path / "series"), load_image(tmp_path / "volume.nii.gz")
    assert locale.setlocale(locale.LC_ALL) == before  # regkit's DICOM read puts GDCM's locale change back
    assert from_dicom.shape == (10, 12, 9)
    assert torch.equal(from_dicom.data, from_nifti.data)
    assert torch.allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)


def test_folder_without_one_series_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is a directory without a DICOM series"):
        load_image(tmp_path / "empty")


def test_slicer_fcsv_and_mrk_json(tmp_path):
    ras = np.array([[10.0, -20.0, 30.5], [-1.5, 2.0, 3.0]])
    (tmp_path / "lps.fcsv").write_text(
        "# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        + "".join(f"vtkMRMLMarkupsFiducialNode_{i},{-p[0]},{-p[1]},{p[2]},0,0,0,1,1,1,0,F-{i},,\n" for i, p in enumerate(ras)))
    (tmp_path / "ras.fcsv").write_text(
        "# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        + "".join(f"{i},{p[0]},{p[1]},{p[2]},0,0,0,1,1,1,0,F-{i},,\n" for i, p in enumerate(ras)))
    doc = {"markups": [{"type": "Fiducial", "coordinateSystem": "LPS",
                        "controlPoints": [{"label": f"F-{i}", "position": [-p[0], -p[1], p[2]]} for i, p in enumerate(ras)]}]}
    (tmp_path / "points.mrk.json").write_text(json.dumps(doc))
    for name in ("lps.fcsv", "ras.fcsv", "points.mrk.json"):
        np.testing.assert_allclose(read_landmarks(tmp_path / name).numpy(), ras, atol=1e-9, err_msg=name)
    doc["markups"][0]["coordinateSystem"] = "IJK"
    (tmp_path / "bad.mrk.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="coordinate system"):
        read_landmarks(tmp_path / "bad.mrk.json")
