"""Every server command takes a folder holding one DICOM series as INPUT (issue 19, item 3).

The phantom CT is written as an oblique DICOM series; `clara-aws segment` on that folder must write
labels on the series' grid, equal to what the same command writes for the same CT as NIfTI."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("pydicom")

from dicom_fixtures import write_series  # noqa: E402

from ClaraAWSLib.core.geometry import ImageGrid, Volume  # noqa: E402
from ClaraAWSLib.core.imageio import write_image_file  # noqa: E402
from ClaraAWSLib.synthetic.phantom import make_phantom, oblique_direction  # noqa: E402


def test_segment_takes_a_dicom_series_folder(tmp_path, reference_server):
    from test_cli import clara_aws

    phantom = make_phantom(size=(64, 64, 24), spacing=(4.0, 4.0, 8.0), direction=oblique_direction((8, -5, 15)),
                           seed=4)
    grid: ImageGrid = phantom.ct.grid
    write_series(tmp_path / "series" / "ct", phantom.ct.array.astype(np.int16), grid)
    write_image_file(Volume(phantom.ct.array.astype(np.int16), grid), tmp_path / "ct.nii.gz")

    from_dicom = clara_aws("segment", "--server", reference_server.url, "--model", "phantom_abdomen_seg",
                           tmp_path / "series", "-o", tmp_path / "from-dicom.nii.gz")
    assert from_dicom.returncode == 0, from_dicom.stderr
    from_nifti = clara_aws("segment", "--server", reference_server.url, "--model", "phantom_abdomen_seg",
                           tmp_path / "ct.nii.gz", "-o", tmp_path / "from-nifti.nii.gz")
    assert from_nifti.returncode == 0, from_nifti.stderr

    dicom_labels = sitk.ReadImage(str(tmp_path / "from-dicom.nii.gz"))
    nifti_labels = sitk.ReadImage(str(tmp_path / "from-nifti.nii.gz"))
    assert np.allclose(dicom_labels.GetDirection(), grid.direction.flatten(), atol=1e-5)
    assert np.allclose(dicom_labels.GetOrigin(), grid.origin, atol=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(dicom_labels), sitk.GetArrayFromImage(nifti_labels))
    assert sitk.GetArrayFromImage(dicom_labels).any()
