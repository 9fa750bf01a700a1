"""The reference server's built-in models: small classical algorithms that run on the CPU.

None of them is a trained network; each description says so. They exist so that the client, the CLI,
the Slicer module and the benchmarks can be exercised end to end against a real HTTP server.
Every model returns labels on the input's grid (same size; the server copies origin, spacing and
direction from the input).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Sequence

import numpy as np
import SimpleITK as sitk

from . import growing
from .organs import ORGAN_LABELS, SMOOTHING_SIGMA_MM, organ_summary, segment_organs, smooth
from .problems import InvalidParams
from .validation import Index, parse_current_point, parse_points

MODEL_TYPES = ("segmentation", "annotation", "deepgrow", "classification", "others", "pipeline")


class ImageCache:
    """Images derived from one input (smoothed copies), kept as long as the input: a session or a request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Dict[Any, Any] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                return self._items[key]
        value = compute()  # outside the lock: two threads may compute once each, which is harmless
        with self._lock:
            return self._items.setdefault(key, value)


@dataclass
class ModelInput:
    image: sitk.Image
    params: Dict[str, Any]
    cache: ImageCache = field(default_factory=ImageCache)

    @property
    def size(self) -> Sequence[int]:
        return self.image.GetSize()


@dataclass
class ModelOutput:
    labels: np.ndarray  # NumPy order [k, j, i], same shape as the input
    params: Dict[str, Any]


class Model(Protocol):
    name: str
    type: str

    def info(self) -> Dict[str, Any]: ...

    def run(self, request: ModelInput) -> ModelOutput: ...


def _smoothed(request: ModelInput, sigma_mm: float) -> sitk.Image:
    return request.cache.get(("smooth", sigma_mm), lambda: smooth(request.image, sigma_mm))


def _model_info(name: str, type_: str, labels: List[str], description: str, **extra: Any) -> Dict[str, Any]:
    info = {"name": name, "type": type_, "labels": labels, "description": description, "version": "1"}
    info.update(extra)
    return info


class PhantomOrganSegmenter:
    name = "phantom_abdomen_seg"
    type = "segmentation"

    def info(self) -> Dict[str, Any]:
        return _model_info(
            self.name,
            self.type,
            list(ORGAN_LABELS),
            "Classical HU-threshold and connected-component segmenter for the ClaraAWS synthetic abdominal "
            "phantom (liver, spleen, kidneys picked by position in LPS space); not a trained network, not for "
            "clinical CT.",
        )

    def run(self, request: ModelInput) -> ModelOutput:
        labels = segment_organs(request.image, _smoothed(request, SMOOTHING_SIGMA_MM))
        return ModelOutput(
            labels,
            {
                "label_names": {name: value for value, name in enumerate(ORGAN_LABELS, start=1)},
                "points": growing.extreme_points(labels > 0),
                "voxels": organ_summary(labels),
            },
        )


GROWING_SIGMA_MM = 1.0
REGION_LABEL = "region"


class RegionGrowAnnotation:
    """Extreme points -> their bounding box -> region grown from the box's centre inside the box."""

    name = "region_grow_annotation"
    type = "annotation"
    padding_mm = 20.0  # context around the box used for intensity statistics
    box_tolerance_mm = 2.0  # extreme points sit on the edge; let the region reach just past them

    def info(self) -> Dict[str, Any]:
        return _model_info(
            self.name,
            self.type,
            [REGION_LABEL],
            "Classical region growing inside the box of 6 or more extreme points (seeded at their centroid "
            "and the box centre, intensity window from the seeds and their surroundings); not a trained "
            "network, not for clinical use.",
            padding=self.padding_mm,
        )

    def run(self, request: ModelInput) -> ModelOutput:
        points = parse_points(request.params, "points", request.size, min_count=6)
        spacing = request.image.GetSpacing()
        shape = tuple(reversed(request.size))
        marks = np.zeros(shape, dtype=bool)
        for point in points:
            marks[growing.numpy_index(point)] = True
        context = growing.padded_box(marks, spacing, self.padding_mm)
        inner = growing.padded_box(marks, spacing, self.box_tolerance_mm)
        allowed = np.zeros(shape, dtype=bool)
        allowed[inner] = True

        offset = [s.start for s in reversed(context)]  # ITK order
        crop = smooth(request.image[growing.sitk_box(context)], GROWING_SIGMA_MM)
        array = np.asarray(points, dtype=float)
        centroid = tuple(int(round(v)) for v in array.mean(axis=0))
        box_centre = tuple(int(round(v)) for v in (array.min(axis=0) + array.max(axis=0)) / 2.0)
        seeds = _shifted(dict.fromkeys([centroid, box_centre]), offset)
        region = growing.grow_region(crop, seeds, allowed[context])

        labels = np.zeros(shape, dtype=np.uint8)
        labels[context][region] = 1
        return ModelOutput(
            labels,
            {
                "label_names": {REGION_LABEL: 1},
                "points": growing.extreme_points(labels > 0),
                "bbox": growing.bounding_box(allowed),
            },
        )


def _shifted(points: Iterable[Index], offset: Sequence[int]) -> List[Index]:
    """Indices relative to a crop that starts at ``offset`` (ITK order)."""
    return [tuple(c - o for c, o in zip(point, offset)) for point in points]


def _clicks(request: ModelInput):
    foreground = parse_points(request.params, "foreground", request.size)
    background = parse_points(request.params, "background", request.size)
    current = parse_current_point(request.params, request.size)
    if not foreground and not background:
        raise InvalidParams("Deepgrow needs at least one foreground point; send params {\"foreground\": [[i, j, k]]}.")
    return foreground, background, current


def _grow_with_clicks(
    image: sitk.Image, foreground: Sequence[Index], background: Sequence[Index]
) -> np.ndarray:
    """Region grown from the foreground clicks, cut half-way towards each background click."""
    shape = tuple(reversed(image.GetSize()))
    if not foreground:
        return np.zeros(shape, dtype=bool)
    region = growing.grow_region(image, foreground)
    if not background or not region.any():
        return region
    # Only the region's box (plus the clicks) can change, so compute distances there.
    marks = region.copy()
    for point in list(foreground) + list(background):
        marks[growing.numpy_index(point)] = True
    box = growing.padded_box(marks, image.GetSpacing(), 0.0)
    offset = [s.start for s in reversed(box)]
    inside_foreground, inside_background = _shifted(foreground, offset), _shifted(background, offset)
    nearer = growing.closer_to_foreground(region[box].shape, image.GetSpacing(), inside_foreground, inside_background)
    kept = np.zeros(shape, dtype=bool)
    kept[box] = growing.keep_seeded_components(region[box] & nearer, inside_foreground)
    return kept


class RegionGrowDeepgrow:
    """Clicks -> region grown from the foreground clicks, stopped half-way to background clicks (3D)."""

    name = "region_grow_deepgrow"
    type = "deepgrow"

    def info(self) -> Dict[str, Any]:
        return _model_info(
            self.name,
            self.type,
            [REGION_LABEL],
            "Classical 3D region growing from foreground clicks (intensity window from the clicked "
            "neighbourhood and its surroundings), cut half-way towards background clicks; not a trained "
            "deepgrow network, not for clinical use.",
            deepgrow="3D",
        )

    def run(self, request: ModelInput) -> ModelOutput:
        foreground, background, _ = _clicks(request)
        image = _smoothed(request, GROWING_SIGMA_MM)
        region = _grow_with_clicks(image, foreground, background)
        labels = region.astype(np.uint8)
        params: Dict[str, Any] = {"label_names": {REGION_LABEL: 1}}
        changed = region.copy()
        for point in list(foreground) + list(background):
            changed[growing.numpy_index(point)] = True
        # Voxels outside this box are background in the result and were not touched by any click.
        params["crop"] = growing.bounding_box(changed)
        return ModelOutput(labels, params)


class RegionGrowDeepgrow2D:
    """The same on the slice of the current click only; the rest of the result is background."""

    name = "region_grow_deepgrow_2d"
    type = "deepgrow"

    def info(self) -> Dict[str, Any]:
        return _model_info(
            self.name,
            self.type,
            [REGION_LABEL],
            "Classical 2D region growing on the slice of the current click (points on other slices are "
            "ignored), cut half-way towards background clicks; not a trained deepgrow network, not for "
            "clinical use.",
            deepgrow="2D",
        )

    def run(self, request: ModelInput) -> ModelOutput:
        foreground, background, current = _clicks(request)
        if current is None:
            current = (foreground or background)[-1]
        k = current[2]
        on_slice = lambda points: [p[:2] for p in points if p[2] == k]  # noqa: E731
        # Built from the array: slicing an oblique image would need a 2D direction it may not have.
        plane = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(request.image)[k].copy())
        plane.SetSpacing(request.image.GetSpacing()[:2])
        slice_image = smooth(plane, GROWING_SIGMA_MM)
        region = _grow_with_clicks(slice_image, on_slice(foreground), on_slice(background))
        labels = np.zeros(tuple(reversed(request.size)), dtype=np.uint8)
        labels[k][region] = 1
        box = growing.bounding_box(region)
        params: Dict[str, Any] = {"label_names": {REGION_LABEL: 1}, "slice": int(k)}
        if box is not None:
            params["crop"] = box + [[int(k), int(k)]]
        return ModelOutput(labels, params)


def builtin_models() -> List[Model]:
    return [PhantomOrganSegmenter(), RegionGrowAnnotation(), RegionGrowDeepgrow(), RegionGrowDeepgrow2D()]


class ModelRegistry:
    """The models a server offers, by name, with the /v1/models filters."""

    def __init__(self, models: Optional[Sequence[Model]] = None) -> None:
        chosen = list(builtin_models() if models is None else models)
        self._models: Dict[str, Model] = {}
        for model in chosen:
            if model.name in self._models:
                raise ValueError(f"Two models are named {model.name!r}; model names must be unique.")
            self._models[model.name] = model

    def get(self, name: str) -> Optional[Model]:
        return self._models.get(name)

    def names(self) -> List[str]:
        return list(self._models)

    def infos(self, label: Optional[str] = None, type_: Optional[str] = None) -> List[Dict[str, Any]]:
        result = []
        for model in self._models.values():
            info = model.info()
            if type_ and info["type"].lower() != type_.lower():
                continue
            if label and label.lower() not in [name.lower() for name in info.get("labels", [])]:
                continue
            result.append(info)
        return result
