"""NIfTI files written by regkit's fast gzip path read back exactly, by nibabel and by ITK."""
import gzip

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from regkit.io.compression import gzip_bytes, save_nifti


def test_save_nifti_gz_reads_back_exactly_in_nibabel_and_itk(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 5, 4, 1, 3)).astype(np.float32)  # a 5-D vector field, as fields are stored
    affine = np.array([[0, -1.5, 0, 10], [2.0, 0, 0, -4], [0, 0, 1.2, 3], [0, 0, 0, 1]])
    nii = nib.Nifti1Image(data, affine)
    nii.set_sform(affine, code=1)
    nii.header.set_intent("vector")
    path = tmp_path / "f.nii.gz"
    save_nifti(nii, path)
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    back = nib.load(str(path))
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, affine)
    itk = sitk.ReadImage(str(path))
    assert itk.GetSize() == (7, 5, 4) and itk.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk).transpose(2, 1, 0, 3), data[:, :, :, 0, :])


def test_gzip_bytes_is_plain_gzip():
    payload = bytes(range(256)) * 100
    assert gzip.decompress(gzip_bytes(payload)) == payload
