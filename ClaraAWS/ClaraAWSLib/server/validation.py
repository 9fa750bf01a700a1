"""Strict checks of request params, at least as strict as a real AIAA server.

A real server converts point coordinates to integers and fails on a JSON string where an array
belongs; this server refuses such params too (HTTP 400), so client bugs show up in tests.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .problems import InvalidParams

Index = Tuple[int, ...]

RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
RESULT_DTYPES = ("uint8", "uint16")
#: How deeply params may nest arrays and objects. Real params need three levels ({"points": [[i, j, k]]});
#: the bound keeps deeper input from exhausting Python's recursion limit when it is read or quoted back.
MAX_PARAMS_NESTING = 32


def parse_params(text: Optional[str]) -> Dict[str, Any]:
    """The ``params`` form field as a dict; a missing or blank field is ``{}``."""
    if text is None or not text.strip():
        return {}
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise InvalidParams(f"The params field is not valid JSON ({exc}); send a JSON object such as {{}}.") from None
    except RecursionError:  # the decoder recurses once per level and gives up long before memory does
        raise _too_deeply_nested() from None
    if not isinstance(params, dict):
        raise InvalidParams(f"The params field must be a JSON object, not {type(params).__name__}.")
    if _nesting_depth(params) > MAX_PARAMS_NESTING:
        raise _too_deeply_nested()
    return params


def _too_deeply_nested() -> InvalidParams:
    return InvalidParams(
        f"The params field nests arrays or objects more than {MAX_PARAMS_NESTING} levels deep; "
        'send a flat JSON object such as {"points": [[i, j, k], ...]}.'
    )


def _nesting_depth(value: Any) -> int:
    """How many arrays and objects deep ``value`` goes, counted without recursion (it may be very deep)."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_PARAMS_NESTING:
            break  # deep enough to refuse; no need to walk the rest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_index(value: Any, key: str, position: int) -> Index:
    if isinstance(value, str):
        raise InvalidParams(
            f"Cannot convert {key}[{position}] = {_short(value)!r} to integers: a point must be a JSON array "
            "of three integers [i, j, k], not a string."
        )
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise InvalidParams(f"{key}[{position}] = {_short(value)} is not a point; send [i, j, k] (three integers).")
    coordinates = []
    for coordinate in value:
        if isinstance(coordinate, bool):
            is_whole_number = False
        elif isinstance(coordinate, int):
            is_whole_number = True  # however large: check_inside then reports it outside the image
        else:
            # Python's JSON reader accepts NaN and Infinity, which int() cannot convert: check before converting.
            is_whole_number = isinstance(coordinate, float) and math.isfinite(coordinate) and coordinate.is_integer()
        if not is_whole_number:
            raise InvalidParams(
                f"Cannot convert {key}[{position}] = {_short(value)} to integer voxel indices; "
                "each coordinate must be a whole number."
            )
        coordinates.append(int(coordinate))
    return tuple(coordinates)


def parse_points(
    params: Dict[str, Any],
    key: str,
    size: Sequence[int],
    *,
    min_count: int = 0,
) -> List[Index]:
    """``params[key]`` as a list of (i, j, k) tuples, each inside an image of ITK ``size``."""
    raw = params.get(key, [])
    if raw is None:
        raw = []
    if isinstance(raw, str):
        raise InvalidParams(
            f"Cannot read {key} = {_short(raw)!r} as voxel indices: it is a JSON string, not an array; send "
            f'"{key}": [[i, j, k], ...] with integer coordinates.'
        )
    if not isinstance(raw, (list, tuple)):
        raise InvalidParams(f"{key} must be a JSON array of [i, j, k] points, not {type(raw).__name__}.")
    points = [_as_index(value, key, n) for n, value in enumerate(raw)]
    if len(points) < min_count:
        raise InvalidParams(f"{key} has {len(points)} point(s); this model needs at least {min_count}.")
    for n, point in enumerate(points):
        check_inside(point, size, f"{key}[{n}]")
    return points


def parse_current_point(params: Dict[str, Any], size: Sequence[int]) -> Optional[Index]:
    """``current_point`` as sent by clients: [i, j, k] or a list holding one such point (Slicer)."""
    raw = params.get("current_point")
    if raw is None or raw == []:
        return None
    if isinstance(raw, (list, tuple)) and len(raw) == 1 and isinstance(raw[0], (list, tuple, str)):
        raw = raw[0]
    point = _as_index(raw, "current_point", 0)
    check_inside(point, size, "current_point")
    return point


def check_inside(point: Index, size: Sequence[int], name: str) -> None:
    if any(v < 0 or v >= n for v, n in zip(point, size)):
        raise InvalidParams(
            f"{name} = {_short(list(point))} lies outside the image of size {list(size)}; "
            "points are voxel indices [i, j, k] of the image as sent."
        )


def result_options(params: Dict[str, Any]) -> Tuple[str, str, bool]:
    """(file extension, pixel type, compress) for the result image, from the optional params hints."""
    extension = params.get("result_extension") or ".nii.gz"
    if not isinstance(extension, str) or extension.lower() not in RESULT_EXTENSIONS:
        raise InvalidParams(
            f"result_extension {_short(extension)!r} is not supported; use one of {', '.join(RESULT_EXTENSIONS)}."
        )
    dtype = params.get("result_dtype") or "uint8"
    if not isinstance(dtype, str) or dtype.lower() not in RESULT_DTYPES:
        raise InvalidParams(f"result_dtype {_short(dtype)!r} is not supported; use one of {', '.join(RESULT_DTYPES)}.")
    compress = params.get("result_compress", True)
    if not isinstance(compress, bool):
        raise InvalidParams("result_compress must be true or false.")
    extension = extension.lower()
    if extension == ".nii.gz" and not compress:
        extension = ".nii"  # an uncompressed file must not carry a .gz name
    return extension, dtype.lower(), compress
