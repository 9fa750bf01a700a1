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


def test_scenes_dropped_after_failed_requests_close_at_once_on_their_own_thread():
    # Python's cyclic collector runs in whichever thread happens to allocate: a scene that only it can
    # free (held by frames that an exception or a library's internal retry keeps in a cycle) closes on a
    # server or worker thread, while the GUI thread works on MRML. Here the collector runs only in a thread
    # of its own, so a scene that waited for it shows up as closed there.
    script = textwrap.dedent(f"""
        import gc, sys, threading
        sys.path.insert(0, {str(TESTING)!r})
        import numpy as np
        import slicer
        import slicer_scene as ss
        from ClaraAWSLib import ClaraAWSLogic
        from ClaraAWSLib.core.errors import ClaraError
        from ClaraAWSLib.core.geometry import Volume
        from ClaraAWSLib.server import ReferenceServer
        from scene_aiaa_stub import OddAIAAServer
        gc.disable()
        closed_on = []
        failures = []
        for round in range(4):
            harness = ss.new_scene()
            harness.scene.AddObserver(harness.scene.StartCloseEvent,
                                      lambda caller, event: closed_on.append(threading.current_thread().name))
            grid = ss.oblique_grid()
            array = np.zeros(grid.size[::-1], np.int16)
            array[5:15, 10:30, 10:35] = 200
            volume = ss.add_volume(harness, Volume(array, grid))
            seg = ss.new_segmentation(harness, volume)
            target = seg.GetSegmentation().AddEmptySegment("", "x", [1, 0, 0])
            logic = ClaraAWSLogic(harness.scene)
            click = [ss.voxel_to_world(volume, [20, 20, 10])]
            if round % 2 == 0:  # the server answers, then fails on the server (HTTP 500)
                server = OddAIAAServer().start()
                logic.connect(server.url)
                logic.deepgrow(volume, seg, target, "odd_grow", click)
                server.mode = "status500"
                calls = [lambda: logic.deepgrow(volume, seg, target, "odd_grow", click),
                         lambda: logic.autoSegment(volume, "odd_seg")]
            else:  # the server answers, then is stopped
                server = ReferenceServer().start()
                logic.connect(server.url)
                logic.deepgrow(volume, seg, target, "region_grow_deepgrow", click)
                server.stop()
                calls = [lambda: logic.deepgrow(volume, seg, target, "region_grow_deepgrow", click),
                         lambda: logic.autoSegment(volume, "phantom_abdomen_seg")]
            for call in calls:
                try:
                    call()
                except ClaraError as error:
                    failures.append(type(error).__name__)
            server.stop()
            slicer.mrmlScene = None
            del harness, volume, seg, logic, calls, call
            closed_here = list(closed_on)
            collector = threading.Thread(target=gc.collect, name="collector")
            collector.start()
            collector.join()
            print(round, closed_here, closed_on, flush=True)
        print("failures", failures)
        print("closed", closed_on)

        # Whatever still ends with the collector (a cycle of the caller's own) must not clear the logic's
        # scene callbacks before the scene calls them while it closes.
        import types
        from ClaraAWSLib.scene import logic_lifecycle as scene_logic
        harness = ss.new_scene()
        volume = ss.add_volume(harness, Volume(np.zeros((8, 8, 8), np.int16), ss.oblique_grid(size=(8, 8, 8))))
        logic = ClaraAWSLogic(harness.scene)
        held = [harness, logic, volume]
        held.append(held)
        slicer.mrmlScene = None
        del harness, volume, logic, held
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        gc.set_debug(0)
        names = sorted(f.__name__ for f in gc.garbage if isinstance(f, types.FunctionType))
        print("garbage callbacks", [name for name in names if name in ("onSceneClose", "onNodeRemoved")])
        gc.garbage.clear()
        collector = threading.Thread(target=gc.collect, name="collector")
        collector.start()
        collector.join()
        print("callbacks left", len(scene_logic._scene_callbacks))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    failures = next(line for line in run.stdout.splitlines() if line.startswith("failures"))
    assert failures.count("RemoteError") == 4 and failures.count("ServerUnreachableError") == 4, run.stdout
    closed = next(line for line in run.stdout.splitlines() if line.startswith("closed"))
    # Each scene closed as it was dropped, on the thread that dropped it, before any collector ran.
    assert closed == "closed " + str(["MainThread"] * 4), run.stdout
    for round in range(4):
        assert f"{round} {['MainThread'] * (round + 1)}" in run.stdout, run.stdout
    assert "garbage callbacks []" in run.stdout and "callbacks left 0" in run.stdout, run.stdout
