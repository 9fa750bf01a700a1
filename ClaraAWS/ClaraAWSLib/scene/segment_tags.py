"""What ClaraAWS stores on a segment it made: the model and the points, as tags that survive saving the scene."""

from __future__ import annotations

import json
from typing import Any, Dict, Sequence

import vtk

TAG_MODEL = "ClaraAWS.Model"
TAG_EXTREME_POINTS = "ClaraAWS.ExtremePointsRAS"
TAG_FOREGROUND_POINTS = "ClaraAWS.ForegroundPointsRAS"
TAG_BACKGROUND_POINTS = "ClaraAWS.BackgroundPointsRAS"


def points_json(points: Sequence[Sequence[float]]) -> str:
    return json.dumps([[round(float(value), 4) for value in point] for point in points])


def points_of_segment(segmentationNode, segmentId: str) -> Dict[str, Any]:
    """The model and points ClaraAWS stored on a segment (survives saving and reloading the scene)."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    stored: Dict[str, Any] = {}
    if segment is None:
        return stored
    for name in (TAG_MODEL, TAG_EXTREME_POINTS, TAG_FOREGROUND_POINTS, TAG_BACKGROUND_POINTS):
        value = vtk.reference("")
        if segment.GetTag(name, value):
            stored[name] = str(value) if name == TAG_MODEL else json.loads(str(value))
    return stored
