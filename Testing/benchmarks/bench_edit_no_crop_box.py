"""GUI-thread time of a deepgrow click on a 512x512x150 CT when the server sends no crop box.

Without a crop box the whole volume is the edit region. The write rule touches only the union of the
result's bounding box and the segment's current voxels, on the segment's own layer. Side by side in one
run, for a target alone in its layer and for a target sharing its layer with two large organs:
- ClaraAWS: prepare + apply on the GUI thread (the request runs on a worker, as in the panel);
- whole-volume rewrite: the same result written with Slicer's SetBinaryLabelmapToSegment over the
  whole volume (a min and a max merge), as the previous ClaraAWS and a plain effect would do.
Target: under 50 ms on the GUI thread. Needs slicer-core.
Run: python Testing/benchmarks/bench_edit_no_crop_box.py [--size 512,512,150] [--clicks 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/, for slicer_scene

DEEPGROW_MODEL = "region_grow_deepgrow"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512,512,150")
    parser.add_argument("--clicks", type=int, default=5)
    args = parser.parse_args()
    import slicer

    import slicer_scene as ss
    from ClaraAWSLib import ClaraAWSLogic
    from ClaraAWSLib.synthetic.phantom import make_phantom
    from ClaraAWSLib.server import ReferenceServer

    size = tuple(int(v) for v in args.size.split(","))
    phantom = make_phantom(size=size, spacing=(0.7, 0.7, 2.0))
    spleen = np.argwhere(phantom.truth.array == phantom.labels.index("spleen") + 1)
    picks = spleen[np.random.default_rng(0).choice(len(spleen), size=args.clicks, replace=False)]
    print(f"CT {list(size)} int16, {args.clicks} deepgrow clicks on the spleen, crop box removed from every answer")
    harness = ss.new_scene()
    volume_node = ss.add_volume(harness, phantom.ct)
    ras = [ss.voxel_to_world(volume_node, [int(i), int(j), int(k)]) for k, j, i in picks]
    results = {}
    with ReferenceServer() as server:
        logic = ClaraAWSLogic(harness.scene)
        logic.connect(server.url)
        for layout in ("alone in its layer", "sharing a layer with liver and kidney"):
            seg = ss.new_segmentation(harness, volume_node, name=layout)
            target = seg.GetSegmentation().AddEmptySegment("", "spleen", [0.6, 0.4, 0.6])
            if layout.startswith("sharing"):
                for organ in ("liver", "left kidney"):
                    ss.add_segment(seg, organ, phantom.truth.array == phantom.labels.index(organ) + 1, volume_node)
                seg.GetSegmentation().CollapseBinaryLabelmaps(True)
            ours, rewrite = [], []
            for n in range(1, args.clicks + 1):
                started = time.perf_counter()
                request = logic.prepareDeepgrow(volume_node, seg, target, DEEPGROW_MODEL, ras[:n])
                prepared = time.perf_counter() - started
                request.run()
                request.result_params.pop("crop", None)  # as a server that sends no crop box
                request.find_result_box()  # on the worker, as run() does
                started = time.perf_counter()
                logic.apply(request)
                ours.append(prepared + time.perf_counter() - started)
                rewrite.append(_whole_volume_rewrite(slicer, ss, seg, volume_node, request.edit_volume().array > 0))
            results[layout] = (ours, rewrite)
        logic.cleanup()
    for layout, (ours, rewrite) in results.items():
        print(f"Target {layout}:")
        print(f"  ClaraAWS GUI thread per click: median {1000 * statistics.median(ours):.1f} ms "
              f"(clicks: {', '.join(f'{1000 * t:.1f}' for t in ours)})")
        print(f"  whole-volume rewrite:          median {1000 * statistics.median(rewrite):.1f} ms")
        print(f"  ratio whole-volume / ClaraAWS: {statistics.median(rewrite) / statistics.median(ours):.1f}x")
    print("Target: under 50 ms on the GUI thread per click.")


def _whole_volume_rewrite(slicer, ss, seg, volume_node, mask) -> float:
    """The same result written over the whole volume by Slicer's own API, into a scratch segment."""
    scratch = seg.GetSegmentation().AddEmptySegment("", "scratch", [0.1, 0.1, 0.1])
    frame = ss.volume_frame(volume_node, seg)
    started = time.perf_counter()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    ss.paint_segment(seg, scratch, mask, frame, logic.MODE_MERGE_MIN)
    ss.paint_segment(seg, scratch, mask, frame, logic.MODE_MERGE_MAX)
    elapsed = time.perf_counter() - started
    seg.GetSegmentation().RemoveSegment(scratch)
    return elapsed


if __name__ == "__main__":
    main()
