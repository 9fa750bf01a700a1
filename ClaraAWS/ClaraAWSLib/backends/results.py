"""What a backend hands back beside the seam: the session record of a volume the server holds, and a result
(its parameters, timings and label image, decoded on demand within bounds). Both protocols use them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Type, TypeVar, Union

import numpy as np

from ..core.compression import BackgroundEncode
from ..core.errors import MalformedResponseError
from ..core.geometry import ImageGrid, LabelBox, Volume, place_in_grid, voxel_offset
from ..core.imageio import EncodedImage, SliceLimit, as_label_volume, decode_image, decode_label_box, max_result_voxels
from ..core.multipart import parse_multipart
from .transport import json_object


@dataclass
class ImageSession:
    """A volume held by the server, so later calls send only their parameters.

    ``image`` is what was sent (an ``EncodedImage`` once the upload is done), kept to re-create the session.
    """

    session_id: str
    image: Union[EncodedImage, BackgroundEncode]
    expiry: int = 0
    uploads: int = 1
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LabelResult:
    """A work call's answer: its parameters, timings, bytes sent, and the label image on demand."""

    params: Dict[str, Any]
    filename: Optional[str] = None
    image_bytes: Optional[bytes] = None
    bytes_sent: int = 0
    timings: Dict[str, float] = field(default_factory=dict)
    #: The grid of the image the result answers; it bounds how large a result may decode.
    input_grid: Optional[ImageGrid] = None
    #: With a body crop: the whole volume's grid, where the result of the box is placed back.
    full_grid: Optional[ImageGrid] = None
    #: The deflate level of the image this call compressed (None: sent as given or no image).
    upload_level: Optional[int] = None

    def labels(self, needed: Optional[SliceLimit] = None) -> Volume:
        """The result label image; ``needed`` lets an edit skip inflating slices it will not use."""
        if self.image_bytes is None:
            raise MalformedResponseError(
                "The server answered without a result image; the model may not produce label images."
            )
        limit = max_result_voxels(self.input_grid)
        labels = as_label_volume(decode_image(self.image_bytes, self.filename or "", needed=needed, max_voxels=limit))
        if self.full_grid is not None and self.input_grid is not None:
            labels = place_cropped_result(labels, self.input_grid, self.full_grid)
        return labels

    def label_box(self, needed: Optional[SliceLimit] = None) -> LabelBox:
        """Only the labelled box of the result (see ``imageio.decode_label_box``): what an interactive edit needs."""
        if self.image_bytes is None or self.full_grid is not None:
            return LabelBox.of_volume(self.labels(needed))
        return decode_label_box(self.image_bytes, self.filename or "", needed=needed,
                                max_voxels=max_result_voxels(self.input_grid))


def place_cropped_result(labels: Volume, sent: ImageGrid, full: ImageGrid) -> Volume:
    """The result for a box ``sent`` of ``full``, pasted back at its voxel offset (other grids stay as they are).

    A result without geometry but with the box's size is the box's voxels too (a server that dropped
    the header); a result on an unrelated grid is left for ``result_on_grid`` to resample.
    """
    grid = labels.grid
    if grid.size == sent.size and (grid.matches(sent) or _default_geometry(grid)):
        grid = sent
    offset = voxel_offset(grid, full)
    if offset is None:
        return labels
    return place_in_grid(Volume(labels.array, grid), full, offset)


def _default_geometry(grid: ImageGrid) -> bool:
    return bool(np.allclose(grid.spacing, 1.0) and np.allclose(grid.origin, 0.0) and np.allclose(grid.direction, np.eye(3)))


Result = TypeVar("Result", bound="LabelResult")


def multipart_result(result_type: Type[Result], content_type: str, content: bytes, param_names: Sequence[str],
                     what: str) -> Result:
    """A multipart answer as a result: the one part with a filename is the label image, wherever it is, and
    the part named like ``param_names`` its parameters; more than one file is refused."""
    parts = parse_multipart(content_type, content)
    files = [part for part in parts if part.filename]
    if len(files) > 1:
        raise MalformedResponseError(
            f"The server sent {len(files)} result files for {what} where one is expected; the response is malformed."
        )
    params: Dict[str, Any] = {}
    for part in parts:
        if not part.filename and part.name in param_names:
            params = json_object(part.data, "result parameters")
    file = files[0] if files else None
    return result_type(params, file.filename if file else None, file.data if file else None)
