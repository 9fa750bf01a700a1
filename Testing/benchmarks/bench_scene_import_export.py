"""Time on Slicer's GUI thread around an auto-segmentation: ClaraAWS versus the older plugins' file path.

ClaraAWS: ``logic.autoSegment`` on a phantom CT against the reference server on 127.0.0.1; the
calling thread's share outside network waits is ``export`` (copy voxels and grid out of the node)
plus ``import`` (result into segments), from ``logic.lastTimings``. Encoding, decoding and
resampling run in ``request.run``, which the panel runs on a worker thread; they are printed apart.

Older plugins (NVIDIA AIAA, MONAI Label): write the volume with the volume storage node as .nii.gz
(compression on) before uploading, and after the download read the label file with a storage node
into a labelmap node, ImportLabelmapToSegmentationNode, rename the segments, remove the temporary node;
all of it on the GUI thread. Both paths run in the same process, on the same volume and result.

Run: python Testing/benchmarks/bench_scene_import_export.py [--size 512,512,150] [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/, for slicer_scene

import slicer  # noqa: E402

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib import ClaraAWSLogic  # noqa: E402
from ClaraAWSLib.core.imageio import write_image_file  # noqa: E402
from ClaraAWSLib.synthetic.phantom import make_phantom  # noqa: E402
from ClaraAWSLib.server import ReferenceServer  # noqa: E402

MODEL = "phantom_abdomen_seg"


def clara_run(logic, volume_node):
    started = time.perf_counter()
    segmentation = logic.autoSegment(volume_node, MODEL)
    total = time.perf_counter() - started
    timings = dict(logic.lastTimings)
    volume_node.GetScene().RemoveNode(segmentation)
    return timings, total


def old_export(volume_node, folder: Path) -> float:
    started = time.perf_counter()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(folder / "upload.nii.gz"))
    storage.SetUseCompression(True)
    if not storage.WriteData(volume_node):
        raise RuntimeError("The storage node could not write the volume.")
    return time.perf_counter() - started


def old_import(scene, label_file: Path, names) -> float:
    started = time.perf_counter()
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "result")
    reader = slicer.vtkMRMLVolumeArchetypeStorageNode()
    reader.SetFileName(str(label_file))
    if not reader.ReadData(label_node):
        raise RuntimeError("The storage node could not read the label file.")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "old path")
    segmentation.CreateDefaultDisplayNodes()
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation):
        raise RuntimeError("ImportLabelmapToSegmentationNode failed.")
    inner = segmentation.GetSegmentation()
    for index in range(min(inner.GetNumberOfSegments(), len(names))):
        inner.GetNthSegment(index).SetName(names[index])
    display = label_node.GetDisplayNode()
    scene.RemoveNode(label_node)
    if display is not None:
        scene.RemoveNode(display)
    elapsed = time.perf_counter() - started
    scene.RemoveNode(segmentation)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512,512,150", help="i,j,k voxels of the phantom CT")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each path (the median is reported)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))

    started = time.perf_counter()
    phantom = make_phantom(size=size, spacing=(0.78, 0.78, 2.0))
    print(f"phantom CT {size}, int16, {phantom.ct.array.nbytes / 1e6:.0f} MB (built in {time.perf_counter() - started:.1f} s)")

    harness = ss.new_scene()
    volume_node = ss.add_volume(harness, phantom.ct)
    with ReferenceServer(host="127.0.0.1", port=0) as server, tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        logic = ClaraAWSLogic(harness.scene)
        logic.connect(server.url)
        clara = [clara_run(logic, volume_node) for _ in range(args.repeat)]
        labels = logic.lastRequest.labels
        names = logic.model(MODEL)["labels"]
        label_file = folder / "result.nii.gz"
        write_image_file(labels, label_file)  # what the older plugins download (not timed)
        old_exports = [old_export(volume_node, folder) for _ in range(args.repeat)]
        old_imports = [old_import(harness.scene, label_file, names) for _ in range(args.repeat)]
        logic.cleanup()

    def median(stage):
        return statistics.median(t.get(stage, 0.0) for t, _ in clara)

    export, imported = median("export"), median("import")
    clara_gui = export + imported
    old_gui = statistics.median(old_exports) + statistics.median(old_imports)
    print()
    print(f"{'GUI-thread time outside network waits':<44}{'ClaraAWS':>10}{'old path':>10}")
    print(f"{'  export (volume out of the scene)':<44}{export:>9.3f}s{statistics.median(old_exports):>9.3f}s")
    print(f"{'  import (result into segments)':<44}{imported:>9.3f}s{statistics.median(old_imports):>9.3f}s")
    print(f"{'  total':<44}{clara_gui:>9.3f}s{old_gui:>9.3f}s")
    print(f"old path / ClaraAWS: {old_gui / clara_gui:.1f}x more time on the GUI thread")
    print()
    print("ClaraAWS worker-thread stages (not on the GUI thread; the old path does encoding inside its export):")
    for stage in ("encode", "upload", "wait", "download", "decode", "resample"):
        print(f"  {stage:<10}{median(stage):>8.3f}s")
    print(f"  autoSegment wall time, median: {statistics.median(total for _, total in clara):.2f}s")


if __name__ == "__main__":
    main()
