"""MetaImage (.mha) and NRRD files: every voxel their header promises must follow it, and a compressed
stream must inflate whole, up to its checksum.

ITK takes what it can read and says little: MetaIO prints "Uncompress failed" and returns the voxels of a
damaged zlib stream with some of them changed, teem reads a gzip stream cut inside its closing checksum,
and a cut raw file fails with a message about the file's format. A model would segment changed voxels as
if measured, so these files' own bytes are read here, as core/nifti_files.py does for NIfTI. A header this
module cannot follow (a HeaderSize, line or byte skips, a detached data file, another encoding) is left
to ITK: the check may only refuse more.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import InputError
from .inflate import InflateError, gzip_inflater

#: How much of a file's start may hold its text header.
MAX_HEADER_BYTES = 1 << 20
#: Compressed bytes read per step, and inflated bytes asked for per step (a run of zeros inflates 1000-fold).
READ_BYTES = 1 << 20
INFLATE_STEP_BYTES = 16 << 20
#: teem ends a NRRD header line at any of these.
NRRD_LINE_END = re.compile(rb"\r\n|\r|\n")
_METAIMAGE_LOCAL = (b"local",)
_NRRD_FOLLOWED = {b"raw": None, b"gzip": "gzip", b"gz": "gzip"}
_NRRD_UNFOLLOWED_FIELDS = (b"lineskip", b"byteskip", b"datafile")


@dataclass(frozen=True)
class Payload:
    """Where a file's voxels start, and how they are stored: None (raw), "zlib" (MetaIO) or "gzip" (NRRD);
    ``stored_bytes``: how many compressed bytes the reader takes (MetaIO's CompressedDataSize)."""

    offset: int
    compression: Optional[str]
    stored_bytes: Optional[int] = None


def locate_payload(path: Path, image_io: str) -> Optional[Payload]:
    """The voxels' place in a single-file .mha or .nrrd, None when ITK must be left to find them."""
    with open(path, "rb") as stream:
        head = stream.read(MAX_HEADER_BYTES)
    if image_io == "MetaImageIO":
        return _metaimage_payload(head)
    if image_io == "NrrdImageIO":
        return _nrrd_payload(head)
    return None


def _metaimage_payload(head: bytes) -> Optional[Payload]:
    """MetaIO matches keys as written and takes a boolean from its first letter (T, t or 1)."""
    compressed, stored, position = False, None, 0
    while True:
        end = head.find(b"\n", position)
        if end < 0:
            return None
        line, position = head[position:end], end + 1
        key, separator, value = line.replace(b":", b"=", 1).partition(b"=")
        key, value = key.strip(), value.strip()
        if not separator:
            continue
        if key == b"HeaderSize":
            return None
        if key == b"CompressedData":
            compressed = value[:1] in (b"T", b"t", b"1")
        if key == b"CompressedDataSize":
            stored = int(value) if value.isdigit() else 0
        if key == b"ElementDataFile":
            if value.lower() not in _METAIMAGE_LOCAL:
                return None
            return Payload(position, "zlib", stored) if compressed else Payload(position, None)


def _nrrd_payload(head: bytes) -> Optional[Payload]:
    if not head.startswith(b"NRRD000"):
        return None
    encoding, start = None, 0
    for number, match in enumerate(NRRD_LINE_END.finditer(head)):
        line, start = head[start:match.start()], match.end()
        if number == 0 or line.startswith(b"#"):
            continue
        if not line:
            return Payload(start, _NRRD_FOLLOWED[encoding]) if encoding in _NRRD_FOLLOWED else None
        name, _, value = line.partition(b":")
        if value.startswith(b"="):
            continue  # a key/value pair ("key:=value"), not a field
        name = re.sub(rb"[\s_-]", b"", name).lower()
        if name in _NRRD_UNFOLLOWED_FIELDS and value.strip() not in (b"0",):  # a skip of 0 skips nothing
            return None
        if name == b"encoding":
            encoding = value.lstrip(b"=").strip().lower()
    return None


def named_data_file(path: Path, image_io: str) -> Optional[str]:
    """The separate data file a .nhdr/.mhd header names (NRRD ``data file``, MetaImage ``ElementDataFile``), if one."""
    with open(path, "rb") as stream:
        head = stream.read(MAX_HEADER_BYTES)
    if image_io == "NrrdImageIO":
        lines = NRRD_LINE_END.split(head)
        header = lines[1:lines.index(b"")] if b"" in lines else lines[1:]  # a blank line ends the header
        fields = (line.partition(b":") for line in header)
        names = [value.strip() for name, _, value in fields if re.sub(rb"[\s_-]", b"", name).lower() == b"datafile"]
    elif image_io == "MetaImageIO":
        fields = (line.replace(b":", b"=", 1).partition(b"=") for line in head.split(b"\n"))
        names = [value.strip() for key, _, value in fields if key.strip() == b"ElementDataFile"][:1]
        names = [name for name in names if name.lower() != b"local"]
    else:
        return None
    return names[0].decode("utf-8", errors="replace") if names and names[0] else None


def check_payload_complete(path: Path, image_io: str, voxel_bytes: int, *, name: str, advice: str) -> None:
    """Refuse (InputError, one sentence ending in ``advice``) a .mha or .nrrd whose ``voxel_bytes`` of voxels
    are not all there, or whose compressed voxels are damaged or cut short."""
    payload = locate_payload(path, image_io)
    if payload is None:
        return
    with open(path, "rb") as stream:
        stream.seek(payload.offset)
        if payload.compression is None:
            held = max(path.stat().st_size - payload.offset, 0)
            if held < voxel_bytes:
                raise InputError(f"{name} is incomplete: it holds {held} bytes of voxels where its header needs "
                                 f"{voxel_bytes}; {advice}.")
            return
        factory = gzip_inflater if payload.compression == "gzip" else lambda: zlib.decompressobj(zlib.MAX_WBITS)
        if payload.compression == "zlib" and not payload.stored_bytes:
            # MetaIO then inflates the wrong bytes, and says only "Uncompress failed".
            raise InputError(f"{name} says its voxels are compressed but not how many bytes they take (no "
                             f"CompressedDataSize), so ITK would read them wrong; {advice}.")
        left = [payload.stored_bytes if payload.compression == "zlib" else path.stat().st_size]

        def read(count: int) -> bytes:  # MetaIO inflates its CompressedDataSize bytes and no others
            data = stream.read(min(count, left[0]))
            left[0] -= len(data)
            return data

        try:
            produced, whole = _inflate(read, factory, payload.compression == "gzip", voxel_bytes)
        except InflateError as error:
            raise InputError(f"{name} is damaged: its compressed voxels do not inflate ({error}); {advice}.") from None
    if produced < voxel_bytes:
        raise InputError(f"{name} is incomplete: its compressed voxels inflate to {produced} bytes where its header "
                         f"needs {voxel_bytes}; {advice}.")
    if not whole:
        raise InputError(f"{name} is incomplete: its compressed voxels end before their closing checksum; {advice}.")


def _inflate(read: Callable[[int], bytes], factory, members: bool, wanted: int):
    """(bytes inflated, whether the stream reached its end and checksum); stops soon after ``wanted``."""
    inflater, produced = factory(), 0
    while True:
        data = read(READ_BYTES)
        if not data:
            return produced, False
        while data:
            produced += len(inflater.decompress(data, INFLATE_STEP_BYTES))
            if inflater.eof:
                rest = inflater.unused_data
                if not (members and produced < wanted and rest):
                    return produced, True
                inflater, data = factory(), rest  # gzip members follow one another
                continue
            data = inflater.unconsumed_tail
            if produced > wanted + INFLATE_STEP_BYTES:
                return produced, True  # more than the header asks for: ITK reads what it needs
