"""Compressing an upload while it is sent, and choosing how hard to compress.

``BackgroundEncode`` starts deflating a volume's NIfTI bytes block by block on worker threads the
moment it is made (when the user picks a volume, or when a request starts). ``pieces()`` yields the
gzip stream in order as the blocks finish, so an upload can send the first block while later ones
are still being compressed; once every block is done, ``result()`` is the same ``EncodedImage`` that
``nifti.encode_volume`` would have produced at that level, byte for byte.

``choose_level`` picks the deflate level that should finish a streamed upload first: on a slow
uplink the CPU has time to spare, so a denser level costs no wall time and sends fewer bytes;
where the CPU is the bottleneck, level 1 stays. The link's speed comes from ``WireHistory``, the
throughput measured on earlier uploads to the same server; this machine's compression speed is
measured once per process on a sample of real voxels.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, Iterator, List, Optional, Tuple

from .geometry import ImageGrid, Volume
from .gzip_blocks import COMPRESSION_BLOCK_BYTES, GZIP_HEADER, blocks_of, deflate_block, gzip_trailer
from .nifti import EncodedImage, nifti_pieces

#: Levels worth choosing between: 1 (fastest) to 9 (densest); the others add little over these.
CANDIDATE_LEVELS = (1, 3, 6, 9)
#: The compressed output must outrun the link by this factor to count as "the CPU keeps up"
#: (the CPU also parses answers, draws the GUI and, on a laptop, throttles).
CPU_HEADROOM = 1.5
#: A measurement over fewer bytes than this says little about the link.
MIN_MEASURED_UPLOAD_BYTES = 2 << 20
#: An upload that spent more than this share of its time waiting for the compressor did not measure the link.
COMPRESSOR_BOUND_SHARE = 0.2
#: Bytes of voxels compressed per level to measure this machine's speed.
CALIBRATION_BYTES = 256 * 1024
CALIBRATION_REPEATS = 3


class BackgroundEncode:
    """The ``.nii.gz`` bytes of ``volume``, being deflated on ``threads`` worker threads from now on."""

    suffix = ".nii.gz"

    def __init__(self, volume: Volume, *, level: int = 1, threads: int = 0) -> None:
        header, payload = nifti_pieces(volume)  # checks the voxels before any thread starts
        self.grid: ImageGrid = volume.grid
        self.level = int(level)
        self._blocks = list(blocks_of([header, payload], COMPRESSION_BLOCK_BYTES))
        self.raw_size = sum(len(block) for block in self._blocks)
        self.started_at = time.perf_counter()
        self.finished_at: Optional[float] = None
        self._result: Optional[EncodedImage] = None
        self._lock = threading.Lock()
        workers = threads or min(len(self._blocks), os.cpu_count() or 1)
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ClaraAWS encode")
        last = len(self._blocks) - 1
        # Submitted in order: the pool runs them first come, first served, so block 0 is ready first.
        self._deflated: List[Future] = [
            pool.submit(deflate_block, block, self.level, index == last) for index, block in enumerate(self._blocks)
        ]
        self._crc: Future = pool.submit(self._checksum)
        pool.shutdown(wait=False)  # the queued blocks still run; the threads end when they are done
        self._crc.add_done_callback(lambda _: self._note_finished())
        for future in self._deflated:
            future.add_done_callback(lambda _: self._note_finished())

    def _checksum(self) -> int:
        crc = 0
        for block in self._blocks:
            crc = zlib.crc32(block, crc)
        return crc

    def _note_finished(self) -> None:
        if self.finished_at is None and self.done:
            self.finished_at = time.perf_counter()

    @property
    def done(self) -> bool:
        """Whether every block is deflated (then ``result()`` returns at once)."""
        return self._crc.done() and all(future.done() for future in self._deflated)

    @property
    def encode_seconds(self) -> Optional[float]:
        return None if self.finished_at is None else self.finished_at - self.started_at

    def cancel(self) -> None:
        """Stop deflating blocks not yet started (the volume changed or closed); ``result()`` then fails."""
        for future in self._deflated:
            future.cancel()

    def pieces(self) -> Iterator[Tuple[bytes, int]]:
        """(gzip bytes, voxel bytes they cover) in stream order, each as soon as it is compressed."""
        yield GZIP_HEADER, 0
        for block, future in zip(self._blocks, self._deflated):
            yield _finished(future), len(block)
        yield gzip_trailer(_finished(self._crc), self.raw_size), 0

    def result(self) -> EncodedImage:
        """The whole upload, waiting for the blocks still being compressed."""
        with self._lock:
            if self._result is None:
                self._result = EncodedImage(b"".join(piece for piece, _ in self.pieces()), self.suffix, self.grid)
            return self._result

    def estimated_size(self, raw_done: int, compressed_done: int) -> int:
        """The whole stream's expected size once ``raw_done`` voxel bytes gave ``compressed_done`` bytes."""
        if raw_done <= 0:
            return max(compressed_done + 1, self.raw_size // 2)
        return max(compressed_done + 1, int(compressed_done * self.raw_size / raw_done))


def _finished(future: Future):
    try:
        return future.result()
    except FutureCancelled:
        from .errors import CancelledError

        raise CancelledError("The volume's compression was stopped (the volume changed or was closed); nothing was sent.") from None


# --- choosing the level ---------------------------------------------------------------------


class CompressionSpeeds:
    """This machine's deflate speed (voxel bytes per second, all threads) and ratio per level."""

    def __init__(self, table: Dict[int, Tuple[float, float]]) -> None:
        self.table = dict(table)

    @classmethod
    def measure(cls, volume: Volume, threads: int = 0, levels=CANDIDATE_LEVELS) -> "CompressionSpeeds":
        _, payload = nifti_pieces(volume)
        middle = max(0, len(payload) // 2 - CALIBRATION_BYTES // 2)
        sample = bytes(payload[middle : middle + CALIBRATION_BYTES])
        workers = threads or (os.cpu_count() or 1)
        table = {}
        for level in levels:
            seconds = float("inf")
            for _ in range(CALIBRATION_REPEATS):  # the best of a few: other threads may be busy meanwhile
                started = time.perf_counter()
                size = len(deflate_block(sample, level, True))
                seconds = min(seconds, max(time.perf_counter() - started, 1e-6))
            table[level] = (len(sample) / seconds * workers, size / max(1, len(sample)))
        return cls(table)

    def output_rate(self, level: int) -> float:
        """Compressed bytes per second the encoder produces at ``level``."""
        speed, ratio = self.table[level]
        return speed * ratio


_speeds: Optional[CompressionSpeeds] = None
_speeds_lock = threading.Lock()
_measuring: Optional[threading.Thread] = None


def machine_speeds(volume: Volume, *, wait: bool = False) -> Optional[CompressionSpeeds]:
    """This process's measurement of compression speeds, made once on a sample of ``volume``'s voxels.

    The first call starts the measurement on a background thread and returns None (the caller then
    compresses at level 1), so no upload waits for it; ``wait`` waits for it instead.
    """
    global _measuring
    with _speeds_lock:
        if _speeds is None and _measuring is None:
            _measuring = threading.Thread(target=_measure, args=(volume,), name="ClaraAWS compression speeds", daemon=True)
            _measuring.start()
        measuring = _measuring
    if wait and measuring is not None:
        measuring.join()
    return _speeds


def _measure(volume: Volume) -> None:
    global _speeds
    _speeds = CompressionSpeeds.measure(volume)


def choose_level(wire_bytes_per_second: Optional[float], speeds: CompressionSpeeds, headroom: float = CPU_HEADROOM) -> int:
    """The level that should finish a streamed upload first; level 1 without a measured link.

    A streamed upload ends when the slower of the compressor (slowed by ``headroom`` for the other
    work on the machine) and the link is done. A denser level wins only where the link is the
    bottleneck; levels within ``LEVEL_TIE`` of the best time count as equal and the fastest of them
    is taken, so the CPU is not spent for a few kilobytes.
    """
    if not wire_bytes_per_second or wire_bytes_per_second <= 0:
        return 1

    def seconds_per_byte(level: int) -> float:
        speed, ratio = speeds.table[level]
        return max(headroom / speed, ratio / wire_bytes_per_second)

    best = min(seconds_per_byte(level) for level in speeds.table)
    return min(level for level in speeds.table if seconds_per_byte(level) <= best * (1 + LEVEL_TIE))


#: Levels whose expected upload times differ by less than this share are taken as equally fast.
LEVEL_TIE = 0.01


class WireHistory:
    """Upload throughput to one server, from the uploads made so far (bytes per second on the wire)."""

    def __init__(self, keep: int = 5) -> None:
        self._rates: List[float] = []
        self._keep = keep
        self._lock = threading.Lock()

    def record(self, sent_bytes: int, sending_seconds: float, compressor_wait: float = 0.0) -> None:
        """Note one upload; ``sending_seconds`` excludes ``compressor_wait``, the time spent waiting for the compressor.

        An upload that waited long for its compressor kept the socket's buffer empty and says little
        about the link (each send returned at once), so it is not counted.
        """
        if sent_bytes < MIN_MEASURED_UPLOAD_BYTES or sending_seconds <= 0:
            return
        if compressor_wait > COMPRESSOR_BOUND_SHARE * (sending_seconds + compressor_wait):
            return
        with self._lock:
            self._rates = (self._rates + [sent_bytes / sending_seconds])[-self._keep :]

    def throughput(self) -> Optional[float]:
        """The median of the recent uploads' rates, None before the first large upload."""
        with self._lock:
            rates = sorted(self._rates)
        return rates[len(rates) // 2] if rates else None
