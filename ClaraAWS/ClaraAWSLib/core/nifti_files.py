"""Where ITK's NIfTI reader finds a file's voxels, and whether they are all there, from the file's own bytes.

SimpleITK reads NIfTI-1 and Analyze 7.5 through ITK's copy of nifti1_io, which hides two kinds of
damage: nifti_read_buffer replaces every NaN and infinite float voxel by 0, and the missing end of a cut
file comes back as zeros. Both look like measured intensities to a model, so ClaraAWS reads the voxel
bytes itself, and must read them where nifti1_io does: which file holds the header and which the voxels
(a .hdr/.img pair, named by either file, as well as a single .nii), where the voxels start, and how a
gzip file goes on through several members. The rules below follow nifti1_io function by function.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Tuple

import numpy as np

from .errors import InputError
from .inflate import InflateError, gzip_inflater
from .nifti import DTYPE_BY_NIFTI_CODE, NIFTI_HEADER_SIZE  # sizeof(nifti_1_header), Analyze 7.5's too

#: sizeof(nifti_2_header).
NIFTI2_HEADER_BYTES = 540
#: What the messages end in unless the caller says otherwise.
DEFAULT_ADVICE = "copy or download it again"
#: Bytes per voxel of each datatype nifti1_io knows (nifti_datatype_sizes); it refuses any other code.
BYTES_PER_VOXEL = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                   1536: 16, 1792: 16, 2048: 32, 2304: 4}
GZIP_MAGIC = b"\x1f\x8b"
#: The smallest gzip member: 10 header bytes, an empty deflate block, the 8-byte trailer.
SMALLEST_GZIP_BYTES = 20
#: Compressed bytes read from the file per step.
READ_BYTES = 1 << 20
#: Inflated bytes per step while counting a gzip file's size (never held all at once).
COUNT_BLOCK_BYTES = 16 << 20
#: How far past the voxels the count goes to reach the stream's end, where zlib checks the trailer. A
#: stream holding far more than its header promises stops there: ITK reads only the voxels, and a small
#: file inflating to gigabytes (a gzip bomb) costs no more than its voxels.
TAIL_CHECK_BYTES = 16 << 20


@dataclass(frozen=True)
class NiftiVoxels:
    """Where nifti1_io reads an image's voxels: ``size`` bytes from byte ``offset`` of ``path`` (of its
    inflated bytes when ``compressed``); ``dtype`` is the numpy type of a scalar datatype, in the file's
    byte order, or None for the others (RGB, complex)."""

    path: Path
    compressed: bool
    offset: int
    size: int
    dtype: Optional[np.dtype]


class GzipCut(Exception):
    """A gzip file ends inside a member, before the trailer where zlib checks the member's CRC and length."""


def locate_voxels(path: Path, *, name: Optional[str] = None, advice: str = DEFAULT_ADVICE,
                  start: Optional[bytes] = None) -> Optional[NiftiVoxels]:
    """Where ITK's NIfTI reader would find the voxels of ``path``, checked to be all there.

    None when nifti1_io finds no NIfTI-1 or Analyze header for ``path`` (another format, or a file it cannot
    read, which SimpleITK then reports itself). A file cut short or damaged raises InputError: one sentence
    naming the file (``name`` if given: the server names uploads without their paths) and ending in
    ``advice``. ``start`` is the first bytes of ``path`` when the caller has already read them.
    """
    try:
        return _locate_voxels(path, name, advice, start)
    except OSError as error:  # the other file of a pair may be unreadable, or a file vanish meanwhile
        raise _unreadable(error, name) from None


def _locate_voxels(path: Path, name: Optional[str], advice: str, start: Optional[bytes]) -> Optional[NiftiVoxels]:
    header_name = _header_file(str(path))
    if header_name is None:
        return None
    header_label = name or Path(header_name).name
    if start is not None and header_name == str(path) and not _is_gzip_name(header_name) and len(start) >= NIFTI_HEADER_SIZE:
        header, header_compressed = start[:NIFTI_HEADER_SIZE], False
    else:
        try:
            header, header_compressed = _leading_bytes(header_name, NIFTI_HEADER_SIZE)
        except InflateError:
            raise InputError(f"{header_label} is a damaged gzip file; {advice}.") from None
    if len(header) < NIFTI_HEADER_SIZE:
        if header_compressed:
            raise InputError(f"{header_label} is incomplete: it ends inside its NIfTI header; {advice}.")
        return None  # too short to be a header: SimpleITK says it cannot read the file
    layout = _parse_header(header, header_label)
    if layout is None:
        return None
    endian, sizes, code, offset = layout
    bytes_per_voxel = BYTES_PER_VOXEL.get(code)
    if bytes_per_voxel is None:
        return None  # nifti1_io refuses the datatype ("bad datatype"): SimpleITK reports it
    # nifti_convert_nhdr2nim names the image file after the header file (nifti_makeimgname: .hdr -> .img,
    # any other name is the header file itself), nifti_set_type_from_names makes the image a single file
    # when both names are one, and nifti_image_load_prep opens what nifti_findimgname finds for that name.
    image_name = _image_name(header_name)
    data_name = _find_image_file(image_name, onefile=image_name == header_name)
    if data_name is None:
        return None  # no image file: ITK cannot read it either
    size = int(np.prod(sizes, dtype=np.int64)) * bytes_per_voxel
    if offset < 0:
        # nifti_image_load_prep: a negative offset means the voxels are the last bytes of the image file,
        # which it cannot tell for a gzip name; ITK fails on that, or on an image file it cannot size.
        if _is_gzip_name(image_name) or not os.path.isfile(image_name):
            return None
        offset = max(os.path.getsize(image_name) - size, 0)
    whose = "its header" if name or data_name == header_name else f"its header {Path(header_name).name}"
    compressed = _is_gzip_file(data_name)
    _check_complete(data_name, compressed, offset + size, name or Path(data_name).name, whose, advice)
    dtype = DTYPE_BY_NIFTI_CODE.get(code)
    return NiftiVoxels(Path(data_name), compressed, offset, size, dtype.newbyteorder(endian) if dtype is not None else None)


def _check_complete(data_name: str, compressed: bool, expected: int, what: str, whose: str, advice: str) -> None:
    """Refuse an image file holding fewer than ``expected`` bytes (inflated), or whose gzip data stop
    before their end: ITK would read the missing voxels as 0."""
    present, whole = expected, True
    if not compressed:
        present = os.path.getsize(data_name)
    elif not _recorded_size_matches(data_name, expected):
        try:
            present, whole = _gzip_data_size(data_name, expected)
        except InflateError:
            raise InputError(f"{what} is a damaged gzip file; {advice}.") from None
    if present < expected:
        raise InputError(f"{what} is incomplete: {whose} promises {expected} bytes but the file holds only {present}; {advice}.")
    if not whole:
        raise InputError(f"{what} is incomplete: its gzip data ends before its closing checksum; {advice}.")


def _unreadable(error: OSError, name: Optional[str]) -> InputError:
    what = name or (Path(error.filename).name if error.filename else "The image file")
    return InputError(f"{what} cannot be read ({(error.strerror or str(error)).lower()}); check the file and its permissions.")


def voxel_bytes(voxels: NiftiVoxels, wanted: int, block_bytes: int, *, name: Optional[str] = None,
                advice: str = DEFAULT_ADVICE) -> Iterator[bytes]:
    """The first ``wanted`` voxel bytes, in blocks of at most ``block_bytes``, never holding them all.

    The file was found complete; if it changed since, or a gzip member fails its checksum on the way,
    InputError says so (``name`` defaults to the voxel file's name).
    """
    what = name or voxels.path.name
    try:
        with open(voxels.path, "rb") as stream:
            if voxels.compressed:
                blocks, skip = gzip_members(stream, block_bytes), voxels.offset
            else:
                stream.seek(voxels.offset)
                blocks, skip = iter(lambda: stream.read(block_bytes), b""), 0
            for block in blocks:
                if skip:
                    taken = min(skip, len(block))
                    block, skip = block[taken:], skip - taken
                block = block[:wanted]
                wanted -= len(block)
                if block:
                    yield block
                if wanted <= 0:
                    return
    except InflateError:
        raise InputError(f"{what} is a damaged gzip file; {advice}.") from None
    except GzipCut:
        pass
    except OSError as error:
        raise _unreadable(error, name) from None
    raise InputError(f"{what} is incomplete: it ends before its last voxels; {advice}.")


def is_nifti2(path: Path) -> bool:
    """Whether ``path`` starts with a NIfTI-2 header (540 bytes, magic "n+2" or "ni2" at byte 4).

    SimpleITK 2.5 (ITK 5.4) reads NIfTI with nifti1_io alone, which refuses such a file outright.
    """
    try:
        header, _ = _leading_bytes(str(path), NIFTI2_HEADER_BYTES)
    except (OSError, InflateError):
        return False
    return (len(header) >= 8 and header[:4] in (struct.pack("<i", NIFTI2_HEADER_BYTES), struct.pack(">i", NIFTI2_HEADER_BYTES))
            and header[4:5] == b"n" and header[5:6] in (b"+", b"i") and header[6:7] == b"2")


def gzip_members(stream: BinaryIO, block_bytes: int) -> Iterator[bytes]:
    """The inflated bytes of every gzip member in ``stream``, in turn, in blocks of at most ``block_bytes``.

    As zlib's gzread (ITK's znzlib) reads a file: after a member's end it goes on into the next when the
    bytes there start with the gzip magic, and ignores anything else. Raises GzipCut when the data ends
    inside a member, InflateError when a member is damaged (zlib checks a member's CRC and length in its
    trailer, at its end only).
    """
    data = stream.read(READ_BYTES)
    while True:
        inflater = gzip_inflater()  # one per member: a decompressobj stops at its member's end
        while not inflater.eof:
            if not data:
                data = stream.read(READ_BYTES)
                if not data:
                    raise GzipCut
            block = inflater.decompress(data, block_bytes)
            data = inflater.unconsumed_tail
            if block:
                yield block
        data = inflater.unused_data
        if len(data) < len(GZIP_MAGIC):
            data += stream.read(READ_BYTES)
        if data[: len(GZIP_MAGIC)] != GZIP_MAGIC:
            return


# --- the header ---------------------------------------------------------------------------------


def _parse_header(header: bytes, what: str) -> Optional[Tuple[str, Tuple[int, ...], int, int]]:
    """(byte order, sizes, datatype code, voxel offset) as nifti1_io reads them from a 348-byte header;
    None when nifti1_io would not read it as NIfTI-1 or Analyze (is_nifti_file)."""
    magic = header[344:348]
    # NIFTI_VERSION: "n", then "i" (pair) or "+" (single file), a digit 1-9 and a NUL; anything else is Analyze.
    nifti = magic[:1] == b"n" and magic[1:2] in (b"i", b"+") and b"1" <= magic[2:3] <= b"9" and magic[3:4] == b"\x00"
    if not nifti and header[:4] not in (struct.pack("<i", NIFTI_HEADER_SIZE), struct.pack(">i", NIFTI_HEADER_SIZE)):
        return None  # neither NIfTI nor Analyze: is_nifti_file says -1 and ITK's NIfTI reader declines it
    # need_nhdr_swap: the byte order is the one that makes dim[0] a number of dimensions.
    endian = next((order for order in "<>" if 1 <= struct.unpack_from(order + "h", header, 40)[0] <= 7), None)
    if endian is None:
        raise InputError(f"{what} has a broken NIfTI header (dim[0] = {struct.unpack_from('<h', header, 40)[0]}); "
                         "the file is damaged.")
    dim = struct.unpack_from(endian + "8h", header, 40)
    sizes = dim[1 : dim[0] + 1]
    if any(size <= 0 for size in sizes):
        axis = next(n for n, size in enumerate(sizes, start=1) if size <= 0)
        raise InputError(f"{what} has no voxels: its header gives size {sizes[axis - 1]} along axis {axis}; the file is damaged.")
    vox_offset = struct.unpack_from(endian + "f", header, 108)[0]
    if not math.isfinite(vox_offset) or abs(vox_offset) >= 2 ** 31:
        # nifti1_io casts it to int, which C leaves undefined for these: no file worth guessing about.
        raise InputError(f"{what} has a broken NIfTI header (vox_offset = {vox_offset}); the file is damaged.")
    onefile = nifti and magic[1:2] == b"+"
    offset = int(vox_offset)  # (int) truncates toward zero, as here
    if onefile:
        # nifti_convert_nhdr2nim reads a single file's voxels from no earlier than the header's end:
        #   if( is_onefile ){ ioff = (int)nhdr.vox_offset ; if( ioff < (int) sizeof(nhdr) ) ioff = (int) sizeof(nhdr) ; }
        #   else { ioff = (int)nhdr.vox_offset ; }
        offset = max(offset, NIFTI_HEADER_SIZE)
    code = struct.unpack_from(endian + "h", header, 70)[0]
    return endian, tuple(int(size) for size in sizes), code, offset


# --- file names, as nifti1_io finds them -----------------------------------------------------------


def _extension(name: str) -> Optional[str]:
    """nifti_find_file_extension: .nii, .hdr, .img or .nia (the first three also with .gz) ending ``name``,
    all lower or all upper case; None otherwise."""
    for length, known in ((4, (".nii", ".hdr", ".img", ".nia")), (7, (".nii.gz", ".hdr.gz", ".img.gz"))):
        tail = name[-length:]
        if len(name) >= length and tail.lower() in known:
            return tail if tail.islower() or tail.isupper() else None
    return None


def _cased(extension: str, like: Optional[str]) -> str:
    """``extension`` in upper case when the given name's extension is (nifti1_io looks for .HDR after .IMG)."""
    return extension.upper() if like is not None and like.isupper() else extension


def _is_gzip_name(name: str) -> bool:
    """nifti_is_gzfile: znzlib opens a file through zlib only when its name ends in .gz (or .GZ)."""
    return name.endswith(".gz") or name.endswith(".GZ")


def _is_gzip_file(name: str) -> bool:
    """Whether reading ``name`` inflates it: a .gz name (else znzlib reads raw bytes) holding gzip data
    (else zlib's gzread passes the bytes through as they are)."""
    if not _is_gzip_name(name):
        return False
    with open(name, "rb") as stream:
        return stream.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def _header_file(name: str) -> Optional[str]:
    """nifti_findhdrname: the file whose header nifti1_io reads when asked for ``name``.

    ``name`` itself when it exists with a NIfTI extension other than .img; else, from the name without its
    extension, the first existing of .nii, .nii.gz, .hdr, .hdr.gz (.hdr and .hdr.gz first for an .img).
    """
    extension = _extension(name)
    base = name[: -len(extension)] if extension else name
    first = ".nii"
    if extension and os.path.isfile(name):
        if extension[:4].lower() != ".img":
            return name
        first = ".hdr"
    for kind in (first, ".hdr" if first == ".nii" else ".nii"):
        for candidate in (kind, kind + ".gz"):
            candidate = base + _cased(candidate, extension)
            if os.path.isfile(candidate):
                return candidate
    return None


def _image_name(header_name: str) -> str:
    """nifti_makeimgname: the image file name nifti1_io derives from its header file's name."""
    extension = _extension(header_name) or ""
    if extension[:4].lower() == ".hdr":
        return header_name[: -len(extension)] + _cased(".img", extension) + extension[4:]
    return header_name


def _find_image_file(image_name: str, *, onefile: bool) -> Optional[str]:
    """nifti_findimgname: the existing file nifti1_io reads voxels from, .nii first for a single file,
    .img first for a pair, each before its .gz."""
    extension = _extension(image_name)
    base = image_name[: -len(extension)] if extension else image_name
    for kind in ((".nii", ".img") if onefile else (".img", ".nii")):
        for candidate in (kind, kind + ".gz"):
            candidate = base + _cased(candidate, extension)
            if os.path.isfile(candidate):
                return candidate
    return None


# --- gzip -----------------------------------------------------------------------------------------


def _leading_bytes(name: str, count: int) -> Tuple[bytes, bool]:
    """The first ``count`` bytes nifti1_io reads from ``name`` (fewer if it ends first), and whether it
    inflated them; inflating goes on into further gzip members, as zlib's gzread does."""
    if not _is_gzip_file(name):
        with open(name, "rb") as stream:
            return stream.read(count), False
    leading = b""
    with open(name, "rb") as stream:
        try:
            for block in gzip_members(stream, count):
                leading += block
                if len(leading) >= count:
                    break
        except GzipCut:
            pass
    return leading[:count], True


def _recorded_size_matches(name: str, expected: int) -> bool:
    """Whether the last 4 bytes of a gzip file, the size its (last) member records, are ``expected``.

    A complete single-member file says so without being inflated; a cut file ends in arbitrary bytes that
    match by chance once in 2^32, so only a disagreement needs the slow count.
    """
    if os.path.getsize(name) < SMALLEST_GZIP_BYTES:
        return False
    with open(name, "rb") as stream:
        stream.seek(-4, os.SEEK_END)
        return struct.unpack("<I", stream.read(4))[0] == expected & 0xFFFFFFFF


def _gzip_data_size(name: str, enough: int) -> Tuple[int, bool]:
    """(how many bytes a gzip file inflates to, whether its data reach their end), over all its members.

    The count goes on to the stream's end, where zlib checks each member's trailer, but no further than
    TAIL_CHECK_BYTES past ``enough``. A stream that ends inside a member (before its trailer) is not whole,
    even when it holds ``enough`` bytes. A damaged member raises InflateError.
    """
    total = 0
    with open(name, "rb") as stream:
        try:
            for block in gzip_members(stream, COUNT_BLOCK_BYTES):
                total += len(block)
                if total > enough + TAIL_CHECK_BYTES:
                    break
        except GzipCut:
            return total, False
    return total, True
