"""The logic's life in a scene: dropped without cleanup(), scenes closed under it, answers applied once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import gc  # noqa: E402
import weakref  # noqa: E402

from ClaraAWSLib import ClaraAWSLogic  # noqa: E402

TESTING = Path(__file__).resolve().parent


def test_a_dropped_logic_leaves_no_callbacks_on_the_scene_and_is_collected(harness):
    scene = harness.scene
    logic = ClaraAWSLogic(scene)
    tags = list(logic._observations)
    assert tags and all(scene.GetCommand(tag) is not None for tag in tags)
    reference = weakref.ref(logic)
    del logic
    gc.collect()
    assert reference() is None  # no cycle keeps it alive
    assert all(scene.GetCommand(tag) is None for tag in tags)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    scene.RemoveNode(node)  # would call into a dead logic if an observer had stayed
    scene.Clear(1)


def test_scenes_and_logics_dropped_without_cleanup_do_not_crash_the_interpreter():
    script = textwrap.dedent(f"""
        import gc, sys
        sys.path.insert(0, {str(TESTING)!r})
        import numpy as np
        import slicer
        import slicer_scene as ss
        from ClaraAWSLib import ClaraAWSLogic
        from ClaraAWSLib.core.geometry import Volume
        from ClaraAWSLib.server import ReferenceServer
        with ReferenceServer() as server:
            for round in range(3):
                harness = ss.new_scene()
                grid = ss.oblique_grid()
                array = np.zeros(grid.size[::-1], np.int16)
                array[5:15, 10:30, 10:35] = 200
                volume = ss.add_volume(harness, Volume(array, grid))
                seg = ss.new_segmentation(harness, volume)
                target = seg.GetSegmentation().AddEmptySegment("", "x", [1, 0, 0])
                logic = ClaraAWSLogic(harness.scene)
                logic.connect(server.url)
                logic.deepgrow(volume, seg, target, "region_grow_deepgrow", [ss.voxel_to_world(volume, [20, 20, 10])])
                if round == 1:
                    harness.scene.Clear(1)  # the scene closes under the logic
                if round == 2:
                    del logic  # the logic goes first, the scene after
                    gc.collect()
                slicer.mrmlScene = None
                del harness, volume, seg
                gc.collect()
        print("survived")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "survived" in run.stdout
