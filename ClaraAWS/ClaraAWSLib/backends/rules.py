"""Rules every backend shares: a model must be of a type that does the task, an annotation needs six or more
extreme points, points are voxel indices that lie in the image, and a server's session id may not change a
request's path."""

from __future__ import annotations

import json
import re
from typing import Any, List, Mapping, Sequence
from urllib.parse import quote

from ..core.errors import InputError, MalformedResponseError
from ..core.geometry import ImageGrid

#: An extreme-points annotation needs the outermost voxel of the structure at each end of each axis.
MIN_EXTREME_POINTS = 6
#: Request parameters that hold voxel indices, and how a message names them.
POINT_KEYS = {"points": "Point", "foreground": "Foreground point", "background": "Background point"}


def require_model_type(model: Mapping[str, Any], allowed: Sequence[str], task_words: str) -> Mapping[str, Any]:
    """``model`` if its type is one of ``allowed``, else one readable InputError naming what would do the task."""
    if model.get("type") not in allowed:
        raise InputError(
            f"'{model.get('name')}' is a model of type {model.get('type')}, which does not do {task_words}; "
            f"pick a model of type {' or '.join(allowed)}."
        )
    return model


def check_points_inside(params: Mapping[str, Any], grid: ImageGrid) -> None:
    """Points must be voxels of the image as sent; refusing here saves the upload the server would refuse."""
    size = grid.size
    groups = [(name, params.get(key)) for key, name in POINT_KEYS.items()]
    if params.get("current_point") is not None:
        groups.append(("Current point", [params["current_point"]]))
    for name, points in groups:
        if not isinstance(points, (list, tuple)):
            continue  # not points at all: the server's own checks name it
        for number, point in enumerate(points, start=1):
            try:
                outside = any(not 0 <= int(value) < limit for value, limit in zip(point, size))
            except (TypeError, ValueError):
                continue
            if outside and isinstance(point, (list, tuple)):
                raise InputError(
                    f"{name} {number} at voxel {list(point)} lies outside the volume of {list(size)} voxels; "
                    "give indices from 0 to size-1 along each axis."
                )


#: Session ids go into request paths: only these characters, and never only dots ("..").
SESSION_ID_PATTERN = re.compile(r"(?!\.+$)[A-Za-z0-9._~-]{1,256}")


def index_points(points: Sequence[Sequence[Any]], what: str) -> List[List[int]]:
    """Points as whole voxel indices [i, j, k] (rounded); one InputError for a point that is not three numbers."""
    result = []
    for number, point in enumerate(points or (), start=1):
        values = list(point)
        if len(values) != 3:
            raise InputError(f"The {what} {number} has {len(values)} coordinates; points are voxel indices [i, j, k].")
        try:
            result.append([int(round(float(v))) for v in values])
        except (TypeError, ValueError) as error:
            raise InputError(f"The {what} {number} ({values}) is not numeric; points are voxel indices [i, j, k].") from error
    return result



def session_path(session_id: str) -> str:
    """``/session/<id>``, for an id of safe characters only (a server's id could otherwise rewrite the path)."""
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id):
        raise MalformedResponseError(
            f"The server sent the session id {json.dumps(session_id)[:60]}, which holds characters a session id "
            "may not (letters, digits and . _ ~ - only); the server is faulty or hostile."
        )
    return "/session/" + quote(session_id, safe="")
