"""Decoding a click's full-grid answer: Python's zlib against zlib-ng, side by side (issue 17, item 6).

MONAI Label answers a deepgrow click with the whole grid, a few tens of KB of gzip that inflate to the
CT's voxel count. ``decode_label_box`` inflates it step by step and keeps only the labelled box; the
inflater is zlib-ng's when installed (core/inflate.py), else zlib's. Printed: median milliseconds of
``decode_label_box`` per engine and grid, the ratio, and the bytes inflated per second.

Run: python Testing/benchmarks/bench_inflate.py [--sizes 512,512,150:256,256,100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ClaraAWSLib.core import inflate
from ClaraAWSLib.core.result_images import decode_label_box


def full_grid_answer(size) -> bytes:
    """A deepgrow answer on the whole grid: one small organ, zeros elsewhere, as a server's .nii.gz."""
    array = np.zeros(size[::-1], np.uint8)
    k, j, i = (s // 2 for s in size[::-1])
    array[k - 8:k + 8, j - 20:j + 20, i - 15:i + 15] = 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "answer.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path), True)
        return path.read_bytes()


def median_ms(action, repeats: int = 9) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,512,150:256,256,100")
    args = parser.parse_args()
    fast = inflate._zlib_ng
    if fast is None:
        raise SystemExit("zlib-ng is not installed (pip install zlib-ng); nothing to compare.")
    print(f"{'grid':>14} {'gzip KB':>8} {'zlib ms':>8} {'zlib-ng ms':>10} {'ratio':>6} {'zlib-ng GB/s':>12}")
    for text in args.sizes.split(":"):
        size = tuple(int(v) for v in text.split(","))
        data = full_grid_answer(size)
        inflate._zlib_ng = None
        slow = median_ms(lambda: decode_label_box(data, "answer.nii.gz"))
        by_zlib = decode_label_box(data, "answer.nii.gz")
        inflate._zlib_ng = fast
        quick = median_ms(lambda: decode_label_box(data, "answer.nii.gz"))
        by_zlib_ng = decode_label_box(data, "answer.nii.gz")
        same = by_zlib.start == by_zlib_ng.start and np.array_equal(by_zlib.array, by_zlib_ng.array)
        voxels = int(np.prod(size))
        print(f"{'x'.join(map(str, size)):>14} {len(data) / 1e3:8.1f} {slow:8.1f} {quick:10.1f} {slow / quick:6.1f} "
              f"{voxels / quick / 1e6:12.2f}" + ("" if same else "  (answers differ!)"))


if __name__ == "__main__":
    main()
