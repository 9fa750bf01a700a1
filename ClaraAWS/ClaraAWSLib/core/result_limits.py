"""How large a server's result may be, from the image it answers: the bound on decoding it."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import ResultTooLargeError
from .geometry import ImageGrid


#: A result holds at most this many times the input's voxels: servers answer on the input's grid, a
#: crop of it or a coarser grid, so anything larger is a compression bomb or a broken header.
RESULT_VOXELS_PER_INPUT_VOXEL = 2
#: The bound when the input is not known: a 1024 x 1024 x 1024 volume.
MAX_RESULT_VOXELS = 1 << 30
LARGEST_VOXEL_BYTES = 8
#: Headers, extensions and multipart framing around a result's voxels.
RESULT_OVERHEAD_BYTES = 1 << 20


def max_result_voxels(input_grid: Optional[ImageGrid]) -> int:
    """How many voxels a result answering an image on ``input_grid`` may have (see RESULT_VOXELS_PER_INPUT_VOXEL)."""
    if input_grid is None:
        return MAX_RESULT_VOXELS
    return RESULT_VOXELS_PER_INPUT_VOXEL * int(np.prod(input_grid.size, dtype=np.int64))


def result_byte_limit(input_grid: Optional[ImageGrid]) -> int:
    """The most bytes a result for ``input_grid`` may take on the wire or inflated."""
    return max_result_voxels(input_grid) * LARGEST_VOXEL_BYTES + RESULT_OVERHEAD_BYTES


def check_voxel_count(size, max_voxels: int) -> None:
    voxels = int(np.prod([int(v) for v in size], dtype=np.int64))
    if voxels > max_voxels:
        raise ResultTooLargeError(
            f"The server's result claims {list(size)} = {voxels} voxels, more than the {max_voxels} its input can "
            "explain (a compression bomb or a broken header); it was refused and nothing was changed."
        )
