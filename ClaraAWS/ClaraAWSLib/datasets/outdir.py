"""What a batch may write in OUTDIR: its own outputs, never an INPUT image and never a file of the user's.

The folder's journal (journal.py) names every file a batch wrote there; any other image in OUTDIR is the
user's ("foreign"). Before anything is sent, a batch of local INPUTs is refused when a case's output would
be any case's input or a foreign file, or when OUTDIR lies inside an INPUT folder and holds foreign images
(the folder walk leaves OUTDIR out, so they would silently go unsegmented). While a batch runs, a write
onto a foreign file or an input fails that case instead: an S3 prefix is listed as the batch goes.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Callable, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..core.errors import InputError
from .inputs import DICOM_SUFFIXES, Case, has_dicom_preamble, image_suffix
from .journal import recorded_outputs

LOCK_NAME = ".clara-aws-lock"
#: How files.replace_atomically and volume_files.write_image_file name a file while it is written.
_PARTIAL = re.compile(r"\.[0-9a-f]{8}\.partial(\.|$)")
def _is_image(path: Path) -> bool:
    """An image file, or a DICOM file as scanners name them (a DICOM suffix, or none and the DICM preamble)."""
    name = path.name.lower()
    if image_suffix(name) or name.endswith(DICOM_SUFFIXES) or name.endswith((".hdr", ".img", ".img.gz")):
        return True
    if "." in name:
        return False
    try:
        with open(path, "rb") as stream:
            return has_dicom_preamble(stream.read(132))
    except OSError:
        return False


def foreign_files(outdir: Path) -> FrozenSet[str]:
    """Lower-case names of the image files in ``outdir`` that no batch wrote (journal.recorded_outputs): a
    case-insensitive file system (macOS, Windows) would write ``CT.nii.gz`` over a ``ct.nii.gz``."""
    if not outdir.is_dir():
        return frozenset()
    ours = recorded_outputs(outdir)
    return frozenset(path.name.lower() for path in outdir.iterdir()
                     if path.is_file() and not path.name.startswith(".") and path.name not in ours and _is_image(path))


def input_files(case: Case) -> List[Path]:
    """The local files a case is read from (none for an S3 object: it is downloaded under generated names)."""
    if case.kind == "dicom" and case.series is not None:
        return [Path(f) for f in case.series.files]
    return [case.path] if case.path is not None else []


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def overwrite_reason(case: Case, path: Path, foreign: FrozenSet[str]) -> Optional[str]:
    """Why writing ``case``'s output at ``path`` would destroy something, or None."""
    if not path.exists():
        return None
    if any(_same_file(path, source) for source in input_files(case)):
        return f"The output {path} of case {case.case_id} is its own input image"
    if path.name.lower() in foreign:
        return (f"OUTDIR already holds {path.name}, which no batch wrote there, so case {case.case_id} would "
                "replace a file of yours")
    return None


def check_outdir(cases: Sequence[Case], output_of: Callable[[Case], Path], outdir: Path,
                 foreign: FrozenSet[str], input_folders: Iterable[Path]) -> None:
    """Refuse (InputError, one sentence) a batch that would write over an input or a file of the user's, or
    leave the user's images in OUTDIR out without a word; nothing has been sent yet."""
    advice = "give -o a folder of its own (a new one, or one an earlier batch wrote)"
    for folder in input_folders:
        if outdir.is_dir() and folder.is_dir() and _same_file(folder, outdir):
            raise InputError(f"OUTDIR {outdir} is the INPUT folder {folder}: the label images would be written among "
                             f"the images; {advice}, e.g. {outdir.resolve().name}-labels.")
        if foreign and outdir.is_dir() and folder.resolve() in outdir.resolve().parents:
            raise InputError(f"OUTDIR {outdir} lies inside the INPUT folder {folder} and holds images of its own "
                             f"({_some(foreign)}), which the batch would leave out without segmenting them; {advice}.")
    sources = {}
    for case in cases:
        for source in input_files(case):
            sources.setdefault(_identity(source), case)
    for case in cases:
        path = output_of(case)
        if not path.exists():
            continue
        owner = sources.get(_identity(path))
        if owner is not None:
            whose = "its own" if owner is case else f"case {owner.case_id}'s"
            raise InputError(f"The output of case {case.case_id} would be {path}, which is {whose} INPUT image; "
                             f"{advice}.")
        if path.name.lower() in foreign:
            clashes = sorted(output_of(other).name for other in cases if output_of(other).name.lower() in foreign)
            raise InputError(f"OUTDIR {outdir} holds images no batch wrote there ({_some(frozenset(clashes))}), which "
                             f"cases of this batch would replace: they may be yours; move them away or give -o a new "
                             "folder.")


def folder_identity(folder: Path) -> Optional[Tuple[int, int]]:
    """(device, inode) of ``folder`` (or of any file), None when it is gone: a folder removed and made again is
    another one."""
    try:
        status = folder.stat()
        return status.st_dev, status.st_ino
    except OSError:
        return None


def _identity(path: Path):
    return folder_identity(path) or str(path.resolve())


def _some(names: FrozenSet[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed[:3]) + (f" and {len(listed) - 3} more" if len(listed) > 3 else "")


@contextlib.contextmanager
def one_batch_at_a_time(outdir: Path) -> Iterator[None]:
    """Create OUTDIR and hold it for one batch: a second batch writing into it would each rewrite report.csv
    from its own rows, and the other's would vanish. The operating system drops the lock when the process
    ends, however it ends, so no stale lock is left to remove by hand."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        handle = open(outdir / LOCK_NAME, "a+b")
    except OSError as error:
        raise InputError(f"OUTDIR {outdir} cannot be created or written ({error.strerror or error}); give -o a "
                         "folder you can write in.") from None
    try:
        try:
            _lock(handle)
        except OSError:
            raise InputError(f"Another clara-aws batch is writing in OUTDIR {outdir} now; wait until it ends, or "
                             "give -o another folder.") from None
        _remove_stale_partials(outdir)
        yield
    finally:
        handle.close()  # releases the lock


def _remove_stale_partials(outdir: Path) -> None:
    """Hidden half-written files a killed batch left (``.<name>.<8 hex>.partial...``): with the lock held, no
    batch is writing them."""
    for path in outdir.iterdir():
        if path.name.startswith(".") and _PARTIAL.search(path.name) and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()


def _lock(handle) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
