"""The network half of a ClaraAWS operation, as a plain object a worker thread can run.

``SegmentationRequest.run`` touches no MRML: it holds copies (voxels, grid, integer points, node IDs)
made on the GUI thread by the logic's ``prepare...`` methods, talks to the server, decodes the result
and puts it on the grid of the image that was sent. ``RequestSequencer`` numbers requests so that the
result of an older request is dropped once a newer one for the same target has started.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from ..backends import AUTO_SEGMENT
from ..core.errors import CancelledError, GeometryError, release_frames
from ..core.geometry import ImageGrid, LabelBox, Volume, result_on_grid
from ..core.progress import Stage, StageProgress
from ..core.result_images import SliceLimit
from .labelmaps import EMPTY_BOX, Box, box_intersection, box_is_empty, box_slices, mask_bounds
from .write_rule import SegmentResult


T = TypeVar("T")


def run_detached(work: Callable[[], T]) -> T:
    """``work()`` on a short-lived thread of its own; its result is returned here, its error raised here.

    HTTP libraries leave reference cycles behind (urllib3 keeps exceptions of connections it retried in
    locals of their frames), and a cycle holds every frame of the stack it was made on. Run on the
    caller's stack, that would be the frames holding the logic, the volume and segmentation nodes and so
    the MRML scene, which then outlives being dropped until Python's cyclic collector frees it: in any
    thread, and in an order that can run a scene observer the collector has already cleared (a crash).
    On a stack of its own, such garbage holds only ``work`` and what it refers to, which is no MRML.
    """
    outcome: Dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # noqa: BLE001 - handed to the caller as it is
            release_frames(error)
            outcome["error"] = error

    worker = threading.Thread(target=run, name="ClaraAWS request", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        error = outcome.pop("error")
        try:
            raise error
        finally:
            del error  # no cycle between this frame and the traceback that includes it
    return outcome.pop("result")


class RequestSequencer:
    """Per-target request numbers; a request is current while no newer one for its target has started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._latest: Dict[Hashable, int] = {}

    def begin(self, target: Hashable) -> int:
        with self._lock:
            self._next += 1
            self._latest[target] = self._next
            return self._next

    def is_current(self, target: Hashable, sequence: int) -> bool:
        with self._lock:
            return self._latest.get(target) == sequence


@dataclass
class SegmentationRequest:
    """Everything one request needs, and after ``run`` everything it produced."""

    kind: str  # AUTO_SEGMENT, ANNOTATE or DEEPGROW
    client: Any
    model: Dict[str, Any]
    endpoint: str  # what the server calls the task (for progress text), from the backend
    grid: ImageGrid  # grid of the image as sent (the volume's own grid)
    volume_node_id: str
    segmentation_node_id: Optional[str]
    segment_id: Optional[str]
    segment_name: str  # as the user knew the segment when asking (messages name it, not its internal ID)
    target: Hashable
    sequence: int
    sequencer: RequestSequencer
    call_arguments: Dict[str, Any] = field(default_factory=dict)  # points etc. for the client method
    volume: Optional[Volume] = None  # sent as the image when no session is used
    volume_session: Any = None  # scene_sessions.VolumeSession when the request goes through a session
    points_ras: Dict[str, List[List[float]]] = field(default_factory=dict)  # stored on the segment as tags
    slice_k: Optional[int] = None  # deepgrow 2D: only this slice of the result counts
    allow_source_conversion: bool = False  # the user agreed (at prepare) to turn closed surfaces into a labelmap
    #: Called with the segmentation right before the write, instead of the logic's beforeSegmentWrite (the
    #: Segment Editor effect saves its own editor's undo state there).
    before_write: Optional[Callable[[Any], None]] = None
    #: The Segment Editor node that selects the result (the effect's own editor, embedded in any module);
    #: None: the Segment Editor module's.
    editor_node_id: Optional[str] = None
    timings: Dict[str, float] = field(default_factory=dict)
    # --- produced by run() -------------------------------------------------------------------------
    labels: Optional[Volume] = None  # auto-segmentation: the result on the grid as sent
    result_labels: Optional[LabelBox] = None  # an edit: only the labelled box of the result, on the grid as sent
    label_values: Tuple[int, ...] = ()
    result_params: Dict[str, Any] = field(default_factory=dict)
    result_box: Box = EMPTY_BOX  # edits: where the result has voxels inside the edit region (i0, i1, j0, j1, k0, k1)
    uploaded: bool = False
    finished: bool = False
    applied: bool = False
    applied_result: Any = None

    @property
    def model_name(self) -> str:
        return str(self.model["name"])

    @property
    def superseded(self) -> bool:
        return not self.sequencer.is_current(self.target, self.sequence)

    def run(self, progress: Optional[Callable[[Any], None]] = None, cancel=None) -> "SegmentationRequest":
        """Network, decoding and resampling; safe on a worker thread. Returns self.

        ``progress(payload)`` receives ``progress_text.StageProgress`` values (encoding, then upload bytes);
        ``cancel`` is anything with ``is_set()``.
        """
        if self.superseded:
            return self  # a newer request for the same target replaced this one before it left
        if cancel is not None and cancel.is_set():
            raise CancelledError("The request was cancelled before it was sent; nothing was changed.")
        report = _upload_reporter(progress, self.endpoint)
        started = time.perf_counter()
        source: Dict[str, Any] = {}
        if self.volume_session is not None:
            was_open = self.volume_session.is_open
            if not was_open and progress is not None:
                progress(StageProgress(Stage.ENCODING))
            source["session"] = self.volume_session.open(self.client, progress=report, cancel=cancel)
            self.uploaded = not was_open
            self.timings["session"] = time.perf_counter() - started
        else:
            if progress is not None:
                progress(StageProgress(Stage.ENCODING))
            source["image"] = self.volume
            self.uploaded = True
        result = self.client.run_task(self.kind, self.model, **self.call_arguments, **source, progress=report,
                                      cancel=cancel, download_progress=_download_reporter(progress))
        self.volume = None  # the voxels are no longer needed; free them early
        for stage, seconds in (result.timings or {}).items():
            self.timings[stage] = self.timings.get(stage, 0.0) + float(seconds)
        self.result_params = dict(result.params or {})
        decode_started = time.perf_counter()
        if self.kind == AUTO_SEGMENT:
            labels = result.labels()
            self.timings["decode"] = time.perf_counter() - decode_started
            resample_started = time.perf_counter()
            self.labels = result_on_grid(labels, self.grid)
            self.timings["resample"] = time.perf_counter() - resample_started
            values = self.labels.array
            self.label_values = tuple(int(v) for v in np.unique(values[values != 0]))
        else:
            # An edit changes only its region, and its answer labels little of it: decode only the labelled
            # box (slices after the region are not even inflated) and never hold or scan the whole grid.
            box = result.label_box(SliceLimit(self.grid, self.edit_region()[0].stop))
            self.timings["decode"] = time.perf_counter() - decode_started
            resample_started = time.perf_counter()
            self.result_labels = box.on_grid(self.grid)
            self.timings["resample"] = time.perf_counter() - resample_started
            self.find_result_box()
        self.timings["run"] = time.perf_counter() - started
        if cancel is not None and cancel.is_set():
            raise CancelledError("The request was cancelled; nothing was changed.")
        self.finished = True
        return self

    # --- what part of the result an interactive edit may change ------------------------------------
    def find_result_box(self) -> None:
        """Where the result has voxels inside the edit region (``result_box``) and which values they hold."""
        found = self._labels_in(self._region_box())
        if found is None:
            self.result_box, self.label_values = EMPTY_BOX, ()
            return
        clipped, values = found
        self.result_box = mask_bounds(values != 0, clipped[0::2])
        self.label_values = tuple(int(v) for v in np.unique(values[values != 0]))

    def _region_box(self) -> Box:
        k, j, i = self.edit_region()
        return (i.start, i.stop - 1, j.start, j.stop - 1, k.start, k.stop - 1)

    def _labels_in(self, box: Box) -> Optional[Tuple[Box, np.ndarray]]:
        """(where, voxels) of the result on ``box``, as far as its labelled box reaches; None where it has none."""
        labels = self.result_labels
        if labels is None or labels.is_empty or box_is_empty(box):
            return None
        (k_size, j_size, i_size), (i0, j0, k0) = labels.array.shape, labels.start
        own: Box = (i0, i0 + i_size - 1, j0, j0 + j_size - 1, k0, k0 + k_size - 1)
        clipped = box_intersection(own, box)
        return None if box_is_empty(clipped) else (clipped, labels.array[box_slices(clipped, own)])

    def _result_mask(self) -> np.ndarray:
        found = None if box_is_empty(self.result_box) else self._labels_in(self.result_box)
        return np.zeros((0, 0, 0), bool) if found is None else found[1] != 0

    def segment_result(self, image_to_frame) -> SegmentResult:
        """The edit as the write rule takes it: inside the edit region the segment becomes the result."""
        return SegmentResult(self._region_box(), self._result_mask(), self.result_box, image_to_frame)

    def edit_volume(self) -> Volume:
        """The edit's result as a whole 0/1 image on the grid as sent (inside the region only), for a new segmentation."""
        size = self.grid.size
        labels = np.zeros(size[::-1], np.uint8)
        if not box_is_empty(self.result_box):
            labels[box_slices(self.result_box, (0, size[0] - 1, 0, size[1] - 1, 0, size[2] - 1))] = self._result_mask()
        return Volume(labels, self.grid)

    def edit_region(self) -> Tuple[slice, slice, slice]:
        """``[k, j, i]`` slices of the result that replace the segment's voxels (crop box, 2D slice)."""
        size_i, size_j, size_k = self.grid.size
        ranges = [[0, size_i], [0, size_j], [0, size_k]]
        crop = self.result_params.get("crop")
        if crop is not None:
            ranges = _crop_ranges(crop, self.grid.size)
        if self.slice_k is not None:
            low, high = ranges[2]
            ranges[2] = [max(low, self.slice_k), min(high, self.slice_k + 1)]
        (i0, i1), (j0, j1), (k0, k1) = ranges
        return slice(k0, max(k0, k1)), slice(j0, max(j0, j1)), slice(i0, max(i0, i1))


def _upload_reporter(progress: Optional[Callable[[Any], None]], endpoint: str):
    """The client's ``(sent, total)`` upload callback, forwarded as one StageProgress payload."""
    if progress is None:
        return None

    def report(sent: int, total: int) -> None:
        progress(StageProgress(Stage.UPLOADING, sent, total, endpoint))

    return report


def _download_reporter(progress: Optional[Callable[[Any], None]]):
    """The client's ``(received, total)`` download callback, forwarded as one StageProgress payload."""
    if progress is None:
        return None

    def report(received: int, total: int) -> None:
        progress(StageProgress(Stage.DOWNLOADING, received, total))

    return report


def _crop_ranges(crop: Any, size: Sequence[int]) -> List[List[int]]:
    """``[[i0, i1], [j0, j1], [k0, k1]]`` with inclusive ends (as the reference server and 2D ``[k, k]`` boxes
    use them) turned into end-exclusive ranges clipped to the image."""
    try:
        ranges = [[int(crop[axis][0]), int(crop[axis][1])] for axis in range(3)]
    except (TypeError, ValueError, IndexError, KeyError) as error:
        raise GeometryError(
            f"The server's crop box {crop!r} is not [[i0, i1], [j0, j1], [k0, k1]]; the result cannot be placed."
        ) from error
    return [[max(0, low), min(int(size[axis]), high + 1)] for axis, (low, high) in enumerate(ranges)]


