"""Writing a box of a result into a segment: inside the box exactly the result, outside it nothing changes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib.geometry import Volume  # noqa: E402
from ClaraAWSLib.scene_export import ijk_to_ras_matrix  # noqa: E402
from ClaraAWSLib.scene_labelmaps import replace_segment_region  # noqa: E402


@pytest.fixture
def scene_with_segments():
    harness = ss.new_scene()
    grid = ss.oblique_grid()
    volume_node = ss.add_volume(harness, Volume(np.zeros(grid.size[::-1], np.int16), grid))
    segmentation = ss.new_segmentation(harness, volume_node)
    shape = grid.size[::-1]
    edited = np.zeros(shape, bool)
    edited[2:6, 5:15, 5:15] = True  # outside the box
    edited[10:14, 20:30, 20:30] = True  # inside the box: partly removed by the result
    neighbour = np.zeros(shape, bool)
    neighbour[8:16, 32:36, 30:40] = True  # another segment reaching into the box
    ids = ss.add_segment(segmentation, "edited", edited, volume_node), ss.add_segment(segmentation, "neighbour", neighbour, volume_node)
    return volume_node, segmentation, ids, edited, neighbour


@pytest.mark.parametrize("result_in_box", ["ring", "empty", "full"])
def test_box_replaces_only_its_voxels(scene_with_segments, result_in_box):
    volume_node, segmentation, (edited_id, neighbour_id), edited, neighbour = scene_with_segments
    box = (slice(8, 16), slice(18, 38), slice(18, 42))
    box_shape = tuple(s.stop - s.start for s in box)
    result = {"empty": np.zeros(box_shape, bool), "full": np.ones(box_shape, bool)}.get(result_in_box)
    if result is None:
        result = np.zeros(box_shape, bool)
        result[1:-1, 2:-2, 2:-2] = True
        result[3:-3, 5:-5, 5:-5] = False
    replace_segment_region(segmentation, edited_id, result, ijk_to_ras_matrix(volume_node), (box[2].start, box[1].start, box[0].start))

    expected = edited.copy()
    expected[box] = result
    assert np.array_equal(ss.segment_on_volume(segmentation, edited_id, volume_node), expected)
    assert np.array_equal(ss.segment_on_volume(segmentation, neighbour_id, volume_node), neighbour)
