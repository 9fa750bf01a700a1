"""A server's result image decoded within bounds: NIfTI-1 read directly, other formats through SimpleITK.

An edit's answer may be inflated only up to the slices it needs, or only to its labelled box; labels
are checked to be labels (whole, non-negative values) before anything uses them.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .errors import MalformedResponseError, ResultTooLargeError
from .geometry import ImageGrid, LabelBox, Volume
from .inflate import InflateError, gzip_inflater
from .mha_nrrd_files import locate_payload
from .native_stderr import last_line, quiet_native_stderr
from .nifti import NIFTI_HEADER_SIZE, NiftiLayout, nifti1_layout, nifti1_volume
from .result_limits import LARGEST_VOXEL_BYTES, MAX_RESULT_VOXELS, RESULT_OVERHEAD_BYTES, check_voxel_count
from .sizes import size_text


@dataclass(frozen=True)
class SliceLimit:
    """Only slices ``k < stop`` of a result on ``grid`` are needed (an interactive edit's box ends there).

    Inflating a gzip stream cannot skip ahead, but it can stop early: a click's result on a large CT is
    mostly zeros after its box, and not inflating them is most of what a click costs the client.
    """

    grid: ImageGrid
    stop: int


def decode_image(
    data: bytes, filename: str = "", *, needed: Optional[SliceLimit] = None, max_voxels: int = MAX_RESULT_VOXELS
) -> Volume:
    """The image in ``data``; NIfTI-1 is read directly, anything else through SimpleITK.

    With ``needed``, a NIfTI result on exactly that grid may be inflated only up to slice
    ``needed.stop``; the slices after it may then read as 0, so only slices before it are to be used.
    A result of more than ``max_voxels`` voxels, or one inflating to more than its header claims, is
    refused before it is inflated (ResultTooLargeError).
    """
    if not data:
        raise MalformedResponseError("The server sent an empty result image; the model produced no output.")
    if data[:2] != b"\x1f\x8b":
        layout = nifti1_layout(data)
        if layout is None:
            return _decode_with_sitk(data, filename, max_voxels)
        check_voxel_count(layout.grid.size, max_voxels)
        return nifti1_volume(data, layout, layout.grid.size[2])
    layout = nifti1_layout(_gunzip(data, NIFTI_HEADER_SIZE))
    if layout is None:
        byte_limit = max_voxels * LARGEST_VOXEL_BYTES + RESULT_OVERHEAD_BYTES
        raw = _gunzip(data, byte_limit + 1)
        if len(raw) > byte_limit:
            raise ResultTooLargeError(
                f"The server's result inflates to more than {size_text(byte_limit)}, far more than its input can "
                "explain (a compression bomb); it was refused and nothing was changed."
            )
        layout = nifti1_layout(raw)
        if layout is None:
            return _decode_with_sitk(raw, filename[:-3] if filename.lower().endswith(".gz") else filename, max_voxels)
        check_voxel_count(layout.grid.size, max_voxels)
        return nifti1_volume(raw, layout, layout.grid.size[2])
    check_voxel_count(layout.grid.size, max_voxels)
    slices = layout.grid.size[2]
    if needed is not None and layout.grid.matches(needed.grid):
        slices = max(0, min(int(needed.stop), slices))
    size_bytes = layout.offset + slices * layout.slice_bytes
    if slices < PARTIAL_INFLATE_WORTH * layout.grid.size[2]:
        return nifti1_volume(_gunzip(data, size_bytes), layout, slices)
    # Inflating a little more into a preallocated buffer is faster than stopping early.
    raw = _gunzip_whole(data, layout.offset + layout.grid.size[2] * layout.slice_bytes)
    return nifti1_volume(raw, layout, layout.grid.size[2])


#: Stop inflating early only when fewer than this share of the slices is needed (see decode_image).
PARTIAL_INFLATE_WORTH = 0.7


def _gunzip_whole(data: bytes, expected_size: int) -> bytes:
    """Inflate a gzip stream that must hold ``expected_size`` bytes (its header says so), and not much more."""
    raw = _gunzip(data, expected_size + RESULT_OVERHEAD_BYTES + 1)
    if len(raw) > expected_size + RESULT_OVERHEAD_BYTES:
        raise ResultTooLargeError(
            f"The server's result inflates to more than the {size_text(expected_size)} its own header claims "
            "(a compression bomb or a faulty server); it was refused and nothing was changed."
        )
    return raw


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate a (possibly multi-member) gzip stream, stopping after ``limit`` bytes."""
    try:
        pieces, total, rest = [], 0, data
        while rest and total < limit:
            inflater = gzip_inflater()
            piece = inflater.decompress(rest, limit - total)
            pieces.append(piece)
            total += len(piece)
            if not inflater.eof:
                if total < limit and not inflater.unconsumed_tail:
                    raise EOFError("the gzip stream ends before its end marker")
                break
            rest = inflater.unused_data
        return b"".join(pieces)
    except (OSError, EOFError, InflateError) as error:
        raise MalformedResponseError(
            "The result image is a damaged gzip file; the download was cut short or the server is faulty.",
            details=str(error),
        ) from error


def _decode_with_sitk(data: bytes, filename: str, max_voxels: int = MAX_RESULT_VOXELS) -> Volume:
    import SimpleITK as sitk

    image_io = _image_io_of(data, filename)
    with tempfile.TemporaryDirectory(prefix="clara-aws-") as folder:
        path = Path(folder) / f"result{_SUFFIXES[image_io]}"
        path.write_bytes(data)
        _check_self_contained(data, path, image_io)
        reader = sitk.ImageFileReader()
        reader.SetImageIO(image_io)  # the format checked above, whatever ITK's factory would have guessed
        reader.SetFileName(str(path))
        try:
            with quiet_native_stderr() as noise:
                reader.ReadImageInformation()  # the size, before any voxel is inflated
                check_voxel_count(reader.GetSize(), max_voxels)
                image = reader.Execute()
        except RuntimeError as error:
            raise MalformedResponseError(
                "The server's result is not an image ClaraAWS can read (expected NIfTI or NRRD).",
                details=last_line(str(error)) or noise.text(),
            ) from error
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    return Volume.from_sitk(image)


_SUFFIXES = {"NrrdImageIO": ".nrrd", "MetaImageIO": ".mha", "NiftiImageIO": ".nii"}
#: Bytes a text header has no use for (tab and line ends are allowed): C code reads a name up to a NUL, so
#: one could hide a field from the check below. MetaIO also ends a key, but not a value, at a lone CR.
_HEADER_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_METAIMAGE_LONE_CR = re.compile(rb"\r(?!\n)")


def _image_io_of(data: bytes, filename: str) -> str:
    """The one ITK reader a result goes to: NRRD by its magic, MetaImage by its name, else NIfTI."""
    if data.startswith(b"NRRD000"):
        return "NrrdImageIO"
    if filename.lower().endswith((".mha", ".mhd")):
        return "MetaImageIO"
    return "NiftiImageIO"


def _check_self_contained(data: bytes, path: Path, image_io: str) -> None:
    """Refuse a result whose header sends ITK to another file for its voxels.

    A NRRD ``data file`` or a MetaImage ``ElementDataFile`` may name any path on the user's machine:
    ITK would read it into OUTPUT (the server copying the user's files, or hanging the client on a FIFO).
    Only a header ``locate_payload`` can follow to voxels in the answer itself passes, as MetaIO and teem
    read it; a NIfTI pair's or Analyze header's .img would be looked for in an empty temporary folder.
    """
    if image_io == "NiftiImageIO":
        return
    payload = locate_payload(path, image_io)
    header = data[: payload.offset] if payload is not None else b""
    if payload is None or _HEADER_CONTROL_BYTES.search(header) or (
            image_io == "MetaImageIO" and _METAIMAGE_LONE_CR.search(header)):
        raise MalformedResponseError(
            "The server's result image does not hold its own voxels (its header names a separate data file or a "
            "layout ClaraAWS does not follow), and ClaraAWS reads nothing but the server's answer; it was refused "
            "and nothing was changed."
        )


def as_label_volume(volume: Volume) -> Volume:
    """A server's result as labels: whole, non-negative values in the smallest unsigned type.

    Servers write labels as uint8, int64 or float32 depending on their writer; anything with
    fractional values is a probability map, not labels, and is refused rather than truncated.
    """
    return Volume(as_label_array(volume.array), volume.grid)


def as_label_array(array: np.ndarray) -> np.ndarray:
    """``as_label_volume`` for voxels alone (an edit's labelled box)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype in (np.uint8, np.uint16):  # already labels; scanning a large volume would cost a click ~20 ms
        return array
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise MalformedResponseError("The server's result holds NaN or infinite values; it is not a label image.")
        rounded = np.rint(array)
        if np.any(np.abs(array - rounded) > 1e-3):
            raise MalformedResponseError(
                "The server's result holds fractional values (a probability map?), not labels; check the model's output writer."
            )
        array = rounded
    if array.size and array.min() < 0:
        raise MalformedResponseError("The server's result holds negative values; it is not a label image.")
    largest = int(array.max()) if array.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise MalformedResponseError("The server's result holds values too large to be labels; it is not a label image.")


# --- an edit's answer: only its labelled box ---------------------------------------------------------

#: Bytes inflated per step while looking for an answer's labels: small enough to stay in the CPU's cache.
BOX_INFLATE_STEP = 128 * 1024
_ZEROS = bytes(BOX_INFLATE_STEP)


def decode_label_box(data: bytes, filename: str = "", *, needed: Optional[SliceLimit] = None,
                     max_voxels: int = MAX_RESULT_VOXELS) -> LabelBox:
    """The labelled box of a result image, with the checks of ``as_label_volume``.

    A gzip-compressed NIfTI answer is inflated step by step into a small buffer and only the steps that
    hold a label are kept: an answer on a whole CT that labels a few thousand voxels never occupies the
    memory of the CT, and nothing has to scan it again afterwards. Other formats are decoded whole first.
    ``needed`` stops inflating after its slices, as for ``decode_image``.
    """
    if data[:2] == b"\x1f\x8b":
        layout = nifti1_layout(_gunzip(data, NIFTI_HEADER_SIZE))
        if layout is not None:
            check_voxel_count(layout.grid.size, max_voxels)
            return _inflate_label_box(data, layout, needed)
    return LabelBox.of_volume(as_label_volume(decode_image(data, filename, needed=needed, max_voxels=max_voxels)))


def _read_to_end_marker(inflater, rest: bytes) -> None:
    """Inflate what is left of a whole answer's gzip member, so that its checksum is verified (zlib checks
    it at the end marker): a byte damaged on the way would otherwise change labels without a word."""
    if inflater.eof:
        return
    tail = inflater.decompress(rest, RESULT_OVERHEAD_BYTES + 1)
    if len(tail) > RESULT_OVERHEAD_BYTES:
        raise ResultTooLargeError(
            "The server's result inflates to more than its own header claims (a compression bomb or a faulty "
            "server); it was refused and nothing was changed."
        )
    if not inflater.eof:
        raise MalformedResponseError(
            "The result image is a damaged gzip file; the download was cut short or the server is faulty."
        )


def _inflate_label_box(data: bytes, layout: NiftiLayout, needed: Optional[SliceLimit]) -> LabelBox:
    size = layout.grid.size
    slices = size[2]
    if needed is not None and layout.grid.matches(needed.grid):
        slices = max(0, min(int(needed.stop), slices))
    itemsize = layout.dtype.itemsize
    wanted = layout.offset + slices * layout.slice_bytes
    label_dtype = layout.dtype.newbyteorder("<") if layout.dtype.byteorder == ">" else layout.dtype
    labelled = _LabelledRows(layout.grid, label_dtype)
    skip, done, pending = layout.offset, 0, b""  # done: voxels seen so far
    try:
        inflater, rest, inflated = gzip_inflater(), data, 0
        while inflated < wanted:
            step = inflater.decompress(rest, min(BOX_INFLATE_STEP, wanted - inflated))
            rest = inflater.unconsumed_tail
            inflated += len(step)
            if not step:
                if inflater.eof and inflater.unused_data:  # a further gzip member
                    inflater, rest = gzip_inflater(), inflater.unused_data
                    continue
                break
            if skip:
                taken = min(skip, len(step))
                step, skip = step[taken:], skip - taken
            if pending:
                step, pending = pending + step, b""
            usable = len(step) - len(step) % itemsize
            if usable < len(step):
                step, pending = step[:usable], step[usable:]
            if step != (_ZEROS if len(step) == BOX_INFLATE_STEP else _ZEROS[:len(step)]):  # a memcmp: most of an answer is zeros
                labelled.add(done, np.frombuffer(step, dtype=layout.dtype))
            done += usable // itemsize
        if inflated >= wanted and slices == size[2]:
            _read_to_end_marker(inflater, rest)
    except InflateError as error:
        raise MalformedResponseError(
            "The result image is a damaged gzip file; the download was cut short or the server is faulty.",
            details=str(error),
        ) from error
    if inflated < wanted:
        raise MalformedResponseError(
            "The result image is shorter than its header says; the download was cut short or the server is faulty."
        )
    return labelled.box()


class _LabelledRows:
    """The rows of an answer that hold a label, gathered step by step: whole rows are tested with one
    reduction each and only labelled ones are copied, so a liver-sized answer (a million voxels) costs a few
    milliseconds instead of the tens per-voxel index arithmetic took, and memory stays near the labelled
    rows' bytes whatever the grid. Rows a step cuts are kept as pieces."""

    def __init__(self, grid: ImageGrid, dtype: np.dtype) -> None:
        self.grid, self.dtype, self.columns = grid, dtype, grid.size[0]
        self.blocks: List[Tuple[np.ndarray, np.ndarray]] = []  # (row numbers, rows)
        self.pieces: List[Tuple[int, int, np.ndarray]] = []  # (row number, first column, voxels)

    def add(self, start: int, voxels: np.ndarray) -> None:
        """``voxels`` from flat voxel number ``start`` on."""
        columns = self.columns
        head = min(-start % columns, voxels.size)
        if head:
            self._piece(start, voxels[:head])
        whole = (voxels.size - head) // columns
        if whole:
            rows = voxels[head: head + whole * columns].reshape(whole, columns)
            held = np.flatnonzero(rows.any(axis=1))
            if held.size:
                self.blocks.append(((start + head) // columns + held, rows[held]))
        tail = head + whole * columns
        if tail < voxels.size:
            self._piece(start + tail, voxels[tail:])

    def _piece(self, start: int, voxels: np.ndarray) -> None:
        if voxels.any():
            self.pieces.append((start // self.columns, start % self.columns, voxels.copy()))

    def box(self) -> LabelBox:
        grid, rows_per_slice = self.grid, self.grid.size[1]
        if not self.blocks and not self.pieces:
            return LabelBox(grid, (0, 0, 0), as_label_array(np.zeros((0, 0, 0), self.dtype)))
        row_numbers = np.concatenate([rows for rows, _ in self.blocks] + [np.array([r for r, _, _ in self.pieces],
                                                                                   dtype=np.int64)])
        firsts, lasts = [], []
        for _, rows in self.blocks:
            used = np.flatnonzero(rows.any(axis=0))
            firsts.append(used[0])
            lasts.append(used[-1])
        for _, column, voxels in self.pieces:
            used = np.flatnonzero(voxels)
            firsts.append(column + used[0])
            lasts.append(column + used[-1])
        i_low, i_high = int(min(firsts)), int(max(lasts))
        k, j = np.divmod(row_numbers, rows_per_slice)
        low = (i_low, int(j.min()), int(k.min()))
        shape = (int(k.max()) - low[2] + 1, int(j.max()) - low[1] + 1, i_high - i_low + 1)
        box = np.zeros(shape, dtype=self.dtype)
        for rows, values in self.blocks:
            k, j = np.divmod(rows, rows_per_slice)
            box[k - low[2], j - low[1], :] = values[:, i_low: i_high + 1]
        for row, column, voxels in self.pieces:
            k, j = divmod(row, rows_per_slice)
            lo, hi = max(column, i_low), min(column + voxels.size, i_high + 1)
            if lo < hi:  # the pieces of one row cover different columns
                box[k - low[2], j - low[1], lo - i_low: hi - i_low] = voxels[lo - column: hi - column]
        return LabelBox(grid, low, as_label_array(box))
