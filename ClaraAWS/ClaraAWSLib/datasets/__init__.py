"""Ring 1 beside the CLI: datasets for batch work (DICOM series, batch inputs, DICOM SEG, the report).

Imports ``core`` and ``aws`` only (never the backends, the scene or Qt); SimpleITK reads DICOM, and the
optional packages (boto3 for s3:// inputs, highdicom and pydicom for DICOM SEG) are imported on first use.
"""

from .dicom_series import DicomSeries, find_series, read_dicom_folder, read_input, read_series  # noqa: F401
from .inputs import Case, CaseIds, IMAGE_SUFFIXES, case_id_of, expand_inputs  # noqa: F401
from .report import CaseRow, Report, dice_scores, label_volumes_ml  # noqa: F401
