"""NaN and infinite voxels: counted, placed by slice for the message, and refused before an upload."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import InputError
from .geometry import Volume


def check_finite(volume: Volume, what: str = "The volume") -> None:
    """Refuse NaN or infinite voxels: a model would segment them as whatever they compare as."""
    array = volume.array
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    counter = NonFiniteCount(volume.grid.size)
    counter.add(array.reshape(-1), 0)
    raise InputError(counter.sentence(what))


class NonFiniteCount:
    """NaN and infinite voxels of an image on ``size`` (i, j, k), counted over its voxels in file order."""

    def __init__(self, size) -> None:
        self.size = tuple(int(v) for v in size)
        self.nan = 0
        self.infinite = 0
        self.first: Optional[int] = None
        self.slices: set = set()

    def add(self, values: np.ndarray, start: int) -> None:
        """Count ``values``, the voxels from flat index ``start`` on (i fastest, then j, then k)."""
        bad = ~np.isfinite(values)
        if not bad.any():
            return
        where = np.flatnonzero(bad)
        nan = int(np.count_nonzero(np.isnan(values[where])))
        self.nan += nan
        self.infinite += len(where) - nan
        if self.first is None:
            self.first = start + int(where[0])
        slice_voxels = self.size[0] * self.size[1]
        self.slices.update(np.unique((start + where) // slice_voxels).tolist())

    @property
    def total(self) -> int:
        return self.nan + self.infinite

    def sentence(self, what: str) -> str:
        """One sentence saying how many voxels are not finite and where, for an InputError."""
        plane = self.size[0] * self.size[1]
        first = [self.first % self.size[0], self.first % plane // self.size[0], self.first // plane]
        kinds = ", ".join(part for part in (f"{self.nan} NaN" if self.nan else "",
                                            f"{self.infinite} infinite" if self.infinite else "") if part)
        slices = sorted(self.slices)
        if len(slices) == 1:
            where = f"slice k = {slices[0]}"
        else:
            where = f"{len(slices)} of its {self.size[2]} slices (k = {slices[0]} to {slices[-1]})"
        return (
            f"{what} holds {self.total} NaN or infinite voxel{'s' if self.total != 1 else ''} ({kinds}) in {where}, "
            f"the first at voxel I,J,K = {first[0]},{first[1]},{first[2]}; replace {'them' if self.total != 1 else 'it'} "
            "(e.g. with the background value) before segmenting."
        )
