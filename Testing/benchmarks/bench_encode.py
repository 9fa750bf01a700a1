"""Upload encoding: ClaraAWS's parallel level-1 NIfTI gzip versus SimpleITK's default .nii.gz.

The older clients (NVIDIA's AIAA plugin, MONAI Label) write the volume with ITK's NIfTI writer and
default gzip compression, then upload the file. This measures both on the same synthetic CT in one
run and prints times, sizes and ratios. Target: >= 3x faster encode at <= 10 % more bytes.

Run: python Testing/benchmarks/bench_encode.py [--size 512,512,150] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ClaraAWSLib.core.imageio import decode_image, encode_volume
from ClaraAWSLib.synthetic.phantom import make_phantom


def best_of(repeat, action):
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = action()
        best = min(best, time.perf_counter() - started)
    return best, value


def slicer_storage_node_write(volume, path, repeat):
    """What NVIDIA's plugin does inside Slicer (saveNode); skipped when slicer-core is not installed."""
    try:
        import slicer
    except ImportError:
        return None
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(volume.grid.ijk_to_ras()))
    slicer.mrmlScene = scene
    slicer.util.updateVolumeFromArray(node, volume.array)

    def write():
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        storage.WriteData(node)
        return path.read_bytes()

    seconds, data = best_of(repeat, write)
    return seconds, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512,512,150")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))

    phantom = make_phantom(size=size, spacing=(0.7, 0.7, 2.0))
    volume = phantom.ct
    raw_mb = volume.array.nbytes / 1e6
    print(f"CT {list(size)} int16, {raw_mb:.1f} MB raw, {os.cpu_count()} CPU cores")

    ours_time, ours = best_of(args.repeat, lambda: encode_volume(volume))
    ours_1_time, ours_1 = best_of(args.repeat, lambda: encode_volume(volume, threads=1))

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "volume.nii.gz"

        def sitk_write():
            sitk.WriteImage(volume.to_sitk(), str(path), useCompression=True)
            return path.read_bytes()

        sitk_time, sitk_bytes = best_of(args.repeat, sitk_write)
        slicer_result = slicer_storage_node_write(volume, Path(folder) / "storage.nii.gz", args.repeat)
        decode_ours, decoded = best_of(args.repeat, lambda: decode_image(ours.data, "v.nii.gz"))
        decode_sitk, _ = best_of(args.repeat, lambda: sitk.ReadImage(str(path)))
    assert np.array_equal(decoded.array, volume.array)

    def row(name, seconds, size_bytes):
        print(f"  {name:<44} {seconds:6.2f} s   {size_bytes / 1e6:6.1f} MB   {raw_mb / seconds:6.0f} MB/s")

    print("Encode (best of %d):" % args.repeat)
    row("ClaraAWS parallel gzip level 1 (all cores)", ours_time, ours.size_bytes)
    row("ClaraAWS gzip level 1 (one thread)", ours_1_time, ours_1.size_bytes)
    row("SimpleITK WriteImage .nii.gz (default)", sitk_time, len(sitk_bytes))
    if slicer_result:
        row("Slicer storage node .nii.gz (saveNode path)", *slicer_result)
    print(f"Speed-up, all cores:  {sitk_time / ours_time:5.2f}x   (target >= 3x)")
    print(f"Speed-up, one thread: {sitk_time / ours_1_time:5.2f}x")
    print(f"Bytes vs SimpleITK:   {ours.size_bytes / len(sitk_bytes):5.3f}x   (target <= 1.10x)")
    if slicer_result:
        print(f"Speed-up vs Slicer storage node: {slicer_result[0] / ours_time:5.2f}x, bytes {ours.size_bytes / slicer_result[1]:5.3f}x")
    print(f"Decode: ClaraAWS {decode_ours:.2f} s, SimpleITK ReadImage {decode_sitk:.2f} s")


if __name__ == "__main__":
    main()
