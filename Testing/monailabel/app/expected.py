"""What the test app's models return, in plain numpy on [i, j, k] arrays (no MONAI): the tests' oracle.

The app's models call these same functions on the image MONAI loads, so a test computes the expected
mask independently of the server, the wire and the client, from the voxels it sent.
"""

import numpy as np

SPLEEN_LOW = 100
LIVER_LOW = 200
FOREGROUND_RADIUS = 2
BACKGROUND_RADIUS = 1
SEG_LABELS = {"spleen": 1, "liver": 2}
DEEPGROW_LABELS = ["spleen", "liver"]
DEEPEDIT_LABELS = {"spleen": 1, "liver": 6, "background": 0}


def seg_threshold(image: np.ndarray) -> np.ndarray:
    out = np.zeros(image.shape, np.uint8)
    out[(image >= SPLEEN_LOW) & (image < LIVER_LOW)] = SEG_LABELS["spleen"]
    out[image >= LIVER_LOW] = SEG_LABELS["liver"]
    return out


def _cube(mask: np.ndarray, point, radius: int, value) -> None:
    index = []
    for axis, c in enumerate(point):
        c = int(round(float(c)))
        if not 0 <= c < mask.shape[axis]:
            return  # MONAI Label ignores clicks outside the image
        index.append(slice(max(0, c - radius), c + radius + 1))
    mask[tuple(index)] = value


def deepgrow(image: np.ndarray, foreground, background) -> np.ndarray:
    grown = np.zeros(image.shape, bool)
    for point in foreground or []:
        _cube(grown, point, FOREGROUND_RADIUS, True)
    grown &= image >= SPLEEN_LOW
    for point in background or []:
        _cube(grown, point, BACKGROUND_RADIUS, False)
    return grown.astype(np.uint8)


def deepedit(image: np.ndarray, clicks: dict) -> np.ndarray:
    out = np.zeros(image.shape, np.uint8)
    for name, value in DEEPEDIT_LABELS.items():
        if name != "background":
            for point in clicks.get(name) or []:
                _cube(out, point, FOREGROUND_RADIUS, value)
    for point in clicks.get("background") or []:
        _cube(out, point, BACKGROUND_RADIUS, 0)
    return out
