"""Volumes to upload bytes and back, and from and to files: one import for the names used across ClaraAWS.

Each concern lives in a module of its own: ``nifti`` (the upload format), ``gzip_blocks`` (parallel
deflate), ``result_images`` (a server's answer decoded within ``result_limits``), ``finite`` (NaN and
infinite voxels), ``volume_files`` (input and output files).
"""

from .finite import check_finite
from .gzip_blocks import COMPRESSION_BLOCK_BYTES, GZIP_HEADER, blocks_of, deflate_block, gzip_trailer, parallel_gzip
from .nifti import EncodedImage, encode_volume, nifti_header, nifti_pieces
from .result_images import SliceLimit, as_label_volume, decode_image, decode_label_box
from .result_limits import max_result_voxels, result_byte_limit
from .volume_files import check_nifti_complete, check_output_path, read_image_file, write_image_file

__all__ = [
    "COMPRESSION_BLOCK_BYTES",
    "GZIP_HEADER",
    "EncodedImage",
    "SliceLimit",
    "as_label_volume",
    "blocks_of",
    "check_finite",
    "check_nifti_complete",
    "check_output_path",
    "decode_image",
    "decode_label_box",
    "deflate_block",
    "encode_volume",
    "gzip_trailer",
    "max_result_voxels",
    "nifti_header",
    "nifti_pieces",
    "parallel_gzip",
    "read_image_file",
    "result_byte_limit",
    "write_image_file",
]
