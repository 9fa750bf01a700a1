"""Batch INPUT expanded into cases: an image file, a folder, an MSD ``dataset.json``, or ``s3://bucket/prefix/``.

Cases come one at a time (a generator), so a bucket is listed page by page as the batch goes, and an
object is streamed to a temporary file only when its case is loaded, then deleted: never the whole
prefix at once. A case that cannot be read fails on its own in ``Case.load`` with one sentence; the
listing goes on.

Case ids: the file (or object) name without its image extension; for a DICOM series the name of its
folder, with ``_2``, ``_3``... for further series in one folder. An id already taken in the batch gets
the next free ``_N`` too, so no two cases write the same ``OUTDIR/<case id>.nii.gz``.

In S3, the DICOM objects of one "folder" (key prefix up to its last ``/``) are one case: S3 lists keys
in order, so a folder is complete at the first key outside it, and its objects are downloaded together
(under generated names) only when the case is opened. A folder that turns out then to hold several series
becomes one case per series (:class:`SeveralSeries`), named as in a local folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterable, Iterator, List, Optional, Set, Tuple

from ..core.errors import InputError
from ..core.geometry import Volume
from .dicom_series import DicomSeries, find_series, read_series
from .journal import recorded_outputs

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
#: Characters a file name may not hold on some system, and path separators: replaced in case ids.
_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
_CHUNK = 1 << 20
#: Object names taken for DICOM slices in S3: these suffixes, or none at all (as scanners often write them).
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def image_suffix(name: str) -> Optional[str]:
    lower = name.lower()
    return next((s for s in IMAGE_SUFFIXES if lower.endswith(s) and len(lower) > len(s)), None)


def case_id_of(name: str) -> str:
    """A file name without its image extension, safe as a file name (no separators, not hidden)."""
    suffix = image_suffix(name)
    stem = name[: -len(suffix)] if suffix else name
    return _UNSAFE.sub("_", stem).strip().lstrip(".") or "case"


class CaseIds:
    """Hands out unique case ids: the first ``x`` stays ``x``, later ones become ``x_2``, ``x_3``...

    It also remembers each input it named, so an input reached twice (a folder and a file in it, two
    overlapping prefixes) is one case, not two that send the same volume."""

    def __init__(self) -> None:
        self._used: set = set()
        self._inputs: set = set()
        self._lock = threading.Lock()  # the listing claims ids, and so does a worker splitting an S3 folder

    def first_time(self, input_name: str) -> bool:
        """False when ``input_name`` (a Case's ``input_name``) already has a case in this batch."""
        with self._lock:
            if input_name in self._inputs:
                return False
            self._inputs.add(input_name)
            return True

    def claim(self, wanted: str) -> str:
        with self._lock:
            candidate, n = wanted, 1
            while candidate.lower() in self._used:  # case-insensitive: OUTDIR may be on such a file system
                n += 1
                candidate = f"{wanted}_{n}"
            self._used.add(candidate.lower())
            return candidate


@dataclass(frozen=True)
class Case:
    """One case of a batch; ``source`` names it in messages (a path or an s3:// URL)."""

    case_id: str
    kind: str  # "image", "dicom", "s3" (an image object) or "s3-dicom" (the DICOM objects of one S3 folder)
    source: str
    path: Optional[Path] = None
    series: Optional[DicomSeries] = None
    bucket_key: Optional[Tuple[str, str]] = None
    s3: Any = field(default=None, compare=False, repr=False)
    #: An S3 object's ETag and size (every object's, for a DICOM folder), from the listing.
    s3_version: str = ""
    #: The object keys of an S3 DICOM folder.
    keys: Tuple[str, ...] = ()
    #: Set for one series of an S3 folder that holds several (see SeveralSeries).
    series_uid: str = ""

    @property
    def input_name(self) -> str:
        """The input for report.csv: the s3:// URL, or the absolute path of the file (of the folder and the
        series' UID for a DICOM series: a folder may hold several)."""
        return input_name(self.kind, self.source, self.series.series_uid if self.series is not None else self.series_uid)

    def input_stamp(self) -> str:
        """A short digest of what says whether the input changed since an earlier run: size and modification
        time of its file (every slice of a DICOM series), or the S3 object's ETag and size; "" when unreadable.
        Only sizes and times go in, never a path or a name."""
        if self.kind.startswith("s3"):
            parts = [self.s3_version]
        else:
            files = self.series.files if self.kind == "dicom" else (self.path,)
            try:
                parts = [f"{stat.st_size}:{stat.st_mtime_ns}" for stat in (Path(f).stat() for f in files)]
            except (OSError, TypeError):
                return ""
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def load(self) -> Volume:
        """The case's voxels and grid; InputError (one sentence) when it cannot be read."""
        from ..core.volume_files import read_image_file

        if self.kind == "dicom":
            return read_series(self.series)
        if self.kind == "s3":
            return self.s3.load(self.bucket_key, self.source)
        if self.kind == "s3-dicom":
            with self.opened() as (volume, _):
                return volume
        return read_image_file(self.path)

    @contextlib.contextmanager
    def opened(self) -> Iterator[Tuple[Volume, Optional[DicomSeries]]]:
        """(voxels, the DICOM series' files or None) while the block runs: an S3 series' downloaded slices
        stay until it ends, for a DICOM SEG that references them."""
        if self.kind != "s3-dicom":
            yield self.load(), self.series
            return
        with self.s3.downloaded_series(self) as series:
            yield read_series(series), series


class SeveralSeries(Exception):
    """An S3 folder turned out, once downloaded, to hold several DICOM series: one case each, ``cases``, in
    series-number order; the first keeps the folder's case id, the others get ``_2``, ``_3``... A folder is
    listed without reading its objects, so this is found only when its case is opened."""

    def __init__(self, cases: List["Case"]) -> None:
        super().__init__(f"{len(cases)} DICOM series")
        self.cases = cases


def has_dicom_preamble(head: bytes) -> bool:
    """Whether a file's first 132 bytes are a DICOM file's: a 128-byte preamble, then "DICM"."""
    return head[128:132] == b"DICM"


def input_name(kind: str, source: str, series_uid: Optional[str] = None) -> str:
    name = source if kind.startswith("s3") else str(Path(source).resolve())
    return f"{name} (series {series_uid})" if kind in ("dicom", "s3-dicom") and series_uid else name


def _hidden_or_excluded(path: Path, root: Path, excluded: set) -> bool:
    parts = path.relative_to(root).parts
    return any(part.startswith(".") for part in parts) or any(
        parent.resolve() in excluded for parent in [path, *path.parents][: len(parts)])


def _folder_cases(root: Path, exclude: Iterable[Path], ids: CaseIds) -> Iterator[Case]:
    """Image files and DICOM series under ``root``; the outputs a batch wrote in any of its folders (its
    journal or report.csv says which) are label images, not cases."""
    excluded = {Path(p).resolve() for p in exclude}
    outputs: Dict[Path, FrozenSet[str]] = {}

    def batch_output(path: Path) -> bool:
        if path.parent not in outputs:
            outputs[path.parent] = recorded_outputs(path.parent)
        return path.name in outputs[path.parent]

    images = sorted(p for p in root.rglob("*") if p.is_file() and image_suffix(p.name)
                    and not _hidden_or_excluded(p, root, excluded) and not batch_output(p))
    series_found = find_series(root, exclude=exclude, skip=batch_output)
    if not images and not series_found:
        raise InputError(f"The folder {root} holds no image files ({', '.join(IMAGE_SUFFIXES)}) and no DICOM series.")
    for path in images:
        if ids.first_time(input_name("image", str(path))):
            yield Case(ids.claim(case_id_of(path.name)), "image", str(path), path=path)
    for series in series_found:
        if ids.first_time(input_name("dicom", str(series.folder), series.series_uid)):
            yield Case(ids.claim(case_id_of(series.case_id)), "dicom", str(series.folder), series=series)


def _msd_cases(path: Path, ids: CaseIds) -> Iterator[Case]:
    try:
        dataset = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path} is not a readable JSON file ({error}); give a Medical Segmentation Decathlon "
                         "dataset.json.") from None
    tests = dataset.get("test") if isinstance(dataset, dict) else None
    if not isinstance(tests, list):
        raise InputError(f"{path} has no 'test' list of images, so it is not a Medical Segmentation Decathlon "
                         "dataset.json with cases to segment.")
    for entry in tests:
        # The Decathlon lists paths ("./imagesTs/la_001.nii.gz"); some derived datasets list {"image": path}.
        relative = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(relative, str) or not relative.strip():
            raise InputError(f"{path} lists a test entry that is not an image path: {str(entry)[:60]}.")
        image = (path.parent / relative).resolve()
        if not ids.first_time(input_name("image", str(image))):
            continue
        yield Case(ids.claim(case_id_of(image.name)), "image", str(image), path=image)


class S3Source:
    """Lists ``s3://bucket/prefix`` page by page and streams one object at a time to a temporary file."""

    def __init__(self, url: str, client: Any = None, *, profile: Optional[str] = None, region: Optional[str] = None,
                 endpoint_url: Optional[str] = None, page_size: Optional[int] = None) -> None:
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise InputError(f"'{url}' names no bucket; give s3://BUCKET/PREFIX/.")
        self.bucket, self.prefix, self.page_size = bucket, prefix, page_size
        self._options = dict(profile=profile, region=region, endpoint_url=endpoint_url)
        self._client = client
        self._ids = CaseIds()

    @property
    def client(self):
        if self._client is None:
            from ..aws.discovery import open_aws_clients

            clients, _ = open_aws_clients(("s3",), default_region="us-east-1", **self._options)
            self._client = clients["s3"]
        return self._client

    def _failure(self, error: Exception, what: str) -> Exception:
        from ..aws.errors import ErrorContext, translate_boto_error

        code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404") and what == "list":
            return InputError(f"The S3 bucket {self.bucket} does not exist (or is in another account): check the "
                              "bucket name.")
        if code in ("NoSuchKey", "404"):
            return InputError(f"The S3 object {what} no longer exists: it was deleted or moved during the batch.")
        context = ErrorContext(region=self.client.meta.region_name, endpoint_url=self.client.meta.endpoint_url,
                               service="S3", action="s3:ListBucket" if what == "list" else "s3:GetObject")
        return translate_boto_error(error, context)

    def cases(self, ids: CaseIds) -> Iterator[Case]:
        from botocore.exceptions import BotoCoreError, ClientError

        config = {"PageSize": self.page_size} if self.page_size else {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig=config)
        self._ids = ids  # a folder found to hold several series claims more ids when it is opened
        folders = _DicomFolders()
        self._found_any = False  # an image object or a DICOM folder, whether or not another INPUT had it
        try:
            for page in pages:  # the next page is asked for only when this one's cases are done
                for item in page.get("Contents") or ():
                    key = item.get("Key", "")
                    for folder, entries in folders.completed_before(key):
                        yield from self._dicom_case(folder, entries, ids)
                    name = key.rsplit("/", 1)[-1]
                    version = f"{item.get('ETag', '')}:{item.get('Size', '')}"
                    if not name or name.startswith("."):
                        continue
                    if image_suffix(name):
                        self._found_any = True
                        if not ids.first_time(f"s3://{self.bucket}/{key}"):
                            continue
                        yield Case(ids.claim(case_id_of(name)), "s3", f"s3://{self.bucket}/{key}",
                                   bucket_key=(self.bucket, key), s3=self, s3_version=version)
                    elif name.lower().endswith(DICOM_SUFFIXES) or "." not in name:
                        folders.add(key, version)
            for folder, entries in folders.completed_before(None):
                yield from self._dicom_case(folder, entries, ids)
        except (BotoCoreError, ClientError) as error:
            raise self._failure(error, "list") from None
        if not self._found_any:
            raise InputError(f"s3://{self.bucket}/{self.prefix} holds no image objects ({', '.join(IMAGE_SUFFIXES)}) "
                             "and no DICOM series; check the prefix (S3 matches it letter for letter, capitals included).")

    def _dicom_case(self, folder: str, entries: List[Tuple[str, str]], ids: CaseIds) -> Iterator[Case]:
        keys = tuple(key for key, _ in entries)
        if not any(key.lower().endswith(DICOM_SUFFIXES) for key in keys) and not self._is_dicom(keys[0]):
            return  # files without a suffix that are not DICOM (a README, a LICENSE): no case
        self._found_any = True
        name = folder.rsplit("/", 1)[-1] or self.bucket
        source = f"s3://{self.bucket}/{folder + '/' if folder else ''}"
        if not ids.first_time(source):
            return
        yield Case(ids.claim(case_id_of(name)), "s3-dicom", source,
                   bucket_key=(self.bucket, folder), s3=self, keys=keys,
                   s3_version="|".join(version for _, version in entries))

    def _is_dicom(self, key: str) -> bool:
        """The DICOM preamble's "DICM" at byte 128, read with one small ranged request."""
        try:
            head = self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-131")["Body"].read()
        except Exception:  # noqa: BLE001 - an unreadable object makes no case; a real failure shows when listing
            return False
        return has_dicom_preamble(head)

    @contextlib.contextmanager
    def downloaded_series(self, case: Case) -> Iterator[DicomSeries]:
        """The case's series of an S3 folder, downloaded under generated names to a temporary folder while the
        block runs; InputError naming the S3 folder when it holds none, SeveralSeries when it holds several."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, source = case.bucket_key[0], case.source
        with download_folder() as folder:
            files = {}
            try:
                for number, key in enumerate(case.keys, start=1):
                    body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
                    local = Path(folder) / f"slice{number:05d}.dcm"
                    with open(local, "wb") as stream:
                        for chunk in body.iter_chunks(_CHUNK):
                            stream.write(chunk)
                    files[local.name] = number - 1
            except (BotoCoreError, ClientError) as error:
                raise self._failure(error, f"s3://{bucket}/{key}") from None
            except OSError as error:
                raise InputError(f"{source} could not be saved to a temporary folder ({error.strerror or error}); "
                                 "free some space in the temporary folder.") from None
            try:
                found = find_series(folder)
            except InputError as error:
                raise InputError(str(error).replace(folder, source), details=error.details) from None
            if case.series_uid:
                found = [series for series in found if series.series_uid == case.series_uid]
                if not found:
                    raise InputError(f"{source} no longer holds the DICOM series of case {case.case_id}: its objects "
                                     "changed during the batch; run the batch again.")
            if not found:
                raise InputError(f"{source} holds no DICOM series.")
            if len(found) > 1:
                raise SeveralSeries(self._one_case_per_series(case, found, files))
            series = DicomSeries(case.case_id, Path(folder), found[0].files, found[0].series_uid)
            try:
                yield series
            except InputError as error:  # name the S3 folder, not the temporary one
                raise InputError(str(error).replace(folder, source.rstrip("/")), details=error.details) from None

    def _one_case_per_series(self, case: Case, found: List[DicomSeries], files: Dict[str, int]) -> List[Case]:
        versions = case.s3_version.split("|")
        cases = []
        for number, series in enumerate(found):
            indices = sorted(files[Path(f).name] for f in series.files)
            case_id = case.case_id if number == 0 else self._ids.claim(case.case_id)
            cases.append(replace(case, case_id=case_id, keys=tuple(case.keys[i] for i in indices),
                                 s3_version="|".join(versions[i] for i in indices if i < len(versions)),
                                 series_uid=series.series_uid))
        return cases

    def load(self, bucket_key: Tuple[str, str], source: str) -> Volume:
        from botocore.exceptions import BotoCoreError, ClientError

        from ..core.volume_files import read_image_file

        bucket, key = bucket_key
        # A generated file name: the key (which may name a patient) goes nowhere but to S3.
        with download_folder() as folder:
            local = Path(folder) / f"case{image_suffix(key)}"
            try:
                body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
                with open(local, "wb") as stream:
                    for chunk in body.iter_chunks(_CHUNK):
                        stream.write(chunk)
            except (BotoCoreError, ClientError) as error:
                raise self._failure(error, source) from None
            except OSError as error:
                raise InputError(f"{source} could not be saved to a temporary file ({error.strerror or error}); "
                                 "free some space in the temporary folder.") from None
            try:
                return read_image_file(local)
            except InputError as error:  # name the object, not the temporary file
                raise InputError(str(error).replace(str(local), source).replace(local.name, source),
                                 details=error.details) from None


_downloads_lock = threading.Lock()
_downloads: Set[str] = set()
_downloads_removed = False


@contextlib.contextmanager
def download_folder() -> Iterator[str]:
    """A temporary folder for downloaded objects while the block runs, known to :func:`remove_downloads`."""
    with _downloads_lock:
        if _downloads_removed:
            raise InputError("The batch is stopping, so no more objects are downloaded.")
        folder = tempfile.mkdtemp(prefix="clara-aws-s3-")
        _downloads.add(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # then forgotten: remove_downloads may run meanwhile
        with _downloads_lock:
            _downloads.discard(folder)


def remove_downloads() -> None:
    """Delete every download folder now, and refuse new ones: a batch stopped at once ends the process with
    os._exit, which runs no ``finally``, and downloaded DICOM slices carry patient data."""
    global _downloads_removed
    with _downloads_lock:
        _downloads_removed = True
        folders = list(_downloads)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


class _DicomFolders:
    """Keys of possible DICOM objects by folder, until the listing has passed each folder.

    S3 lists keys in UTF-8 order, so every key starting with ``folder/`` comes in one run: the first key
    outside it completes the folder. Objects at the top of the bucket mix with folders, so they complete
    only when the listing ends."""

    def __init__(self) -> None:
        self._open: Dict[str, List[Tuple[str, str]]] = {}

    def add(self, key: str, version: str) -> None:
        folder = key.rsplit("/", 1)[0] if "/" in key else ""
        self._open.setdefault(folder, []).append((key, version))

    def completed_before(self, key: Optional[str]) -> List[Tuple[str, List[Tuple[str, str]]]]:
        """Folders the listing has passed once it reaches ``key`` (all of them at its end, ``key`` None)."""
        done = [folder for folder in self._open
                if key is None or (folder and not key.startswith(folder + "/"))]
        return [(folder, self._open.pop(folder)) for folder in done]


def expand_inputs(spec: str, *, exclude: Iterable[Path] = (), s3_client: Any = None, profile: Optional[str] = None,
                  region: Optional[str] = None, endpoint_url: Optional[str] = None,
                  page_size: Optional[int] = None, ids: Optional[CaseIds] = None) -> Iterator[Case]:
    """The cases of batch INPUT ``spec``, one at a time; ``exclude`` keeps folders (OUTDIR) out of a folder walk;
    ``ids`` (shared by several INPUTs of one batch) keeps case ids unique across them."""
    ids = ids if ids is not None else CaseIds()
    if spec.lower().startswith("s3://"):
        yield from S3Source(spec, s3_client, profile=profile, region=region, endpoint_url=endpoint_url,
                            page_size=page_size).cases(ids)
        return
    path = Path(spec)
    if not path.exists():
        raise InputError(f"INPUT {path} does not exist; give an image file, a folder, a dataset.json or s3://BUCKET/PREFIX/.")
    if path.is_dir():
        yield from _folder_cases(path, exclude, ids)
        return
    if path.suffix.lower() == ".json":
        yield from _msd_cases(path, ids)
        return
    if not image_suffix(path.name):
        raise InputError(f"INPUT {path.name} is not an image file ({', '.join(IMAGE_SUFFIXES)}), a folder, a "
                         "dataset.json or s3://BUCKET/PREFIX/.")
    if ids.first_time(input_name("image", str(path))):
        yield Case(ids.claim(case_id_of(path.name)), "image", str(path), path=path)


__all__ = ["Case", "CaseIds", "IMAGE_SUFFIXES", "S3Source", "SeveralSeries", "case_id_of", "expand_inputs", "image_suffix"]
