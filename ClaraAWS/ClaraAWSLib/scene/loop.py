"""The active-learning loop in the scene: next sample in, submitted label out (MONAI Label servers).

Like the segmentation requests, each step is split so a GUI keeps its thread free:
``prepare`` (GUI thread: copies from MRML), ``run`` (any thread: network only), ``apply`` (GUI thread).

- ``NextSampleRequest``: the strategy's pick, downloaded from the datastore; ``apply`` adds it as a
  volume node that remembers its datastore id (node attribute ``DATASTORE_ID_ATTRIBUTE``).
- ``SubmitLabelRequest``: the segments of a segmentation exported on the volume's grid, each in the
  value its *name* has on the server (never its position); segments named like no server label are
  left out and listed. A volume that did not come from the datastore is stored there only when the
  caller says the user agreed, and then under a generated id, never a node or file name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import vtk
from vtk.util import numpy_support

from ..core.errors import CancelledError, InputError
from ..core.geometry import Volume
from . import export as scene_export

DATASTORE_ID_ATTRIBUTE = "ClaraAWS.DatastoreImageId"
#: Which server the id belongs to: an id means nothing on another server's datastore.
DATASTORE_SERVER_ATTRIBUTE = "ClaraAWS.DatastoreServer"


def datastore_id(volume_node, server_url: str) -> Optional[str]:
    """The datastore id a volume node was loaded from, if it came from this server's datastore."""
    image_id = volume_node.GetAttribute(DATASTORE_ID_ATTRIBUTE)
    if not image_id or volume_node.GetAttribute(DATASTORE_SERVER_ATTRIBUTE) != server_url:
        return None
    return image_id


def remember_datastore_id(volume_node, image_id: str, server_url: str) -> None:
    volume_node.SetAttribute(DATASTORE_ID_ATTRIBUTE, image_id)
    volume_node.SetAttribute(DATASTORE_SERVER_ATTRIBUTE, server_url)


def add_volume_node(scene, volume: Volume, name: str):
    """A scalar volume node holding ``volume``'s voxels on its exact grid (LPS file geometry to RAS)."""
    array = np.ascontiguousarray(volume.array)
    image = vtk.vtkImageData()
    image.SetDimensions(*volume.grid.size)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True, array_type=numpy_support.get_vtk_array_type(array.dtype))
    image.GetPointData().SetScalars(scalars)
    matrix = vtk.vtkMatrix4x4()
    ijk_to_ras = volume.grid.ijk_to_ras()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(ijk_to_ras[row, column]))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveImageData(image)
    node.CreateDefaultDisplayNodes()
    return node


@dataclass
class NextSampleRequest:
    client: Any
    server_url: str
    strategy: Optional[str] = None
    image_id: Optional[str] = None
    sample: Dict[str, Any] = field(default_factory=dict)
    volume: Optional[Volume] = None
    finished: bool = False

    def run(self, progress=None, cancel=None) -> "NextSampleRequest":
        """Ask the strategy, then download its image; ``image_id`` stays None when every image is labeled."""
        sample = self.client.next_sample(self.strategy)
        if sample is not None:
            self.sample, self.image_id = sample, sample["id"]
            self.volume = self.client.download_image(self.image_id, progress=progress, cancel=cancel)
        if cancel is not None and cancel.is_set():
            raise CancelledError("Fetching the next sample was cancelled; nothing was changed.")
        self.finished = True
        return self

    def apply(self, scene):
        """The new volume node (named after the datastore id, which is the server's name for it), or None."""
        if not self.finished:
            raise InputError("The request has not run yet; call request.run() before applying it.")
        if self.volume is None:
            return None
        node = add_volume_node(scene, self.volume, self.image_id)
        remember_datastore_id(node, self.image_id, self.server_url)
        return node


@dataclass
class SubmitLabelRequest:
    client: Any
    server_url: str
    volume_node_id: str
    labels: Volume
    label_values: Dict[str, int]
    tag: str = "final"
    image_id: Optional[str] = None  # None: the volume is uploaded (consent given) under a generated id
    volume: Optional[Volume] = None
    submitted: List[str] = field(default_factory=list)  # segment names sent, in value order
    skipped: List[str] = field(default_factory=list)  # segment names no server label has
    answer: Dict[str, Any] = field(default_factory=dict)
    counts: Dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    def run(self, progress=None, cancel=None) -> "SubmitLabelRequest":
        if self.image_id is None:
            self.image_id = self.client.upload_image(self.volume, progress=progress, cancel=cancel)
            self.volume = None
        if cancel is not None and cancel.is_set():
            raise CancelledError("The label was not submitted (cancelled).")
        self.answer = self.client.save_label(self.image_id, self.labels, self.label_values, tag=self.tag, cancel=cancel)
        self.counts = self.client.datastore_counts()
        self.finished = True
        return self

    def apply(self, scene) -> str:
        """Remember the datastore id on the volume (a new upload's generated id); returns the id."""
        if not self.finished:
            raise InputError("The request has not run yet; call request.run() before applying it.")
        node = scene.GetNodeByID(self.volume_node_id)
        if node is not None:
            remember_datastore_id(node, self.image_id, self.server_url)
        return self.image_id


def labels_by_name(segmentation_node, volume_node, label_values: Mapping[str, int]):
    """(label array [k, j, i] on the volume's grid, names sent, names skipped): each segment in its name's value."""
    segmentation = segmentation_node.GetSegmentation()
    chosen, skipped = [], []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        name = segmentation.GetSegment(segment_id).GetName()
        (chosen if name in label_values else skipped).append((segment_id, name))
    if not chosen:
        raise InputError(
            f"No segment of '{segmentation_node.GetName()}' is named like a label of the server "
            f"({', '.join(label_values)}); rename the segments to submit them."
        )
    exported = scene_export.segments_on_volume_grid(segmentation_node, volume_node, [segment_id for segment_id, _ in chosen])
    labels = np.zeros(exported.shape, np.uint16 if max(label_values.values()) > 255 else np.uint8)
    for position, (_, name) in enumerate(chosen, start=1):  # the exporter numbers segments 1..N in list order
        labels[exported == position] = label_values[name]
    if not labels.any():
        # Stored as final, an empty label would mark the image done and teach the model that nothing is there.
        raise InputError(
            f"The segments of '{segmentation_node.GetName()}' named like the server's labels "
            f"({', '.join(name for _, name in chosen)}) hold no voxel on the volume '{volume_node.GetName()}'; "
            "draw the label first (nothing was sent)."
        )
    return labels, [name for _, name in chosen], [name for _, name in skipped]


def prepare_submit(client, server_url: str, volume_node, segmentation_node, label_values: Mapping[str, int],
                   tag: str, upload_consent: bool) -> SubmitLabelRequest:
    image_id = datastore_id(volume_node, server_url)
    if image_id is None and not upload_consent:
        raise InputError(
            f"The volume '{volume_node.GetName()}' did not come from this server's datastore: submitting its label "
            "stores the volume on the server permanently (under a generated id, never its name). Agree to that first."
        )
    grid = scene_export.volume_grid(volume_node)
    array, submitted, skipped = labels_by_name(segmentation_node, volume_node, label_values)
    request = SubmitLabelRequest(
        client=client, server_url=server_url, volume_node_id=volume_node.GetID(), labels=Volume(array, grid),
        label_values={name: int(label_values[name]) for name in label_values}, tag=tag, image_id=image_id,
        submitted=submitted, skipped=skipped,
    )
    if image_id is None:
        request.volume = scene_export.export_volume(volume_node)
    return request
