"""Replacing a file in one rename: a reader, a crash or a full disk never leaves half a file behind."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Callable

from ..core.errors import OutputError
from ..core.volume_files import write_advice


def replace_atomically(path: Path, write: Callable[[Path], None], what: str) -> Path:
    """``write(partial)`` beside ``path`` (hidden, so folder walks skip it), then rename it onto ``path``.

    ``write`` raises OSError when what it wrote is wrong; any OSError becomes one OutputError sentence
    naming ``what``, and the previous file (if any) stays exactly as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"The {what} {path} is a folder; give a file name.")
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    kept = "the previous file is unchanged" if path.exists() else "nothing was written"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(partial)
        os.replace(partial, path)
    except OSError as error:
        reason = str(error.strerror or error)
        raise OutputError(f"Could not write the {what} {path} ({reason}); {kept}: {write_advice(reason)}.") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return path
