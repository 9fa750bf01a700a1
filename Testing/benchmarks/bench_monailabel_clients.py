"""ClaraAWS versus the MONAI Label Slicer plugin's own client, against the real MONAI Label server.

Both talk to one server (the test app of Testing/monailabel/app, started here on 127.0.0.1), on one
synthetic CT, and each result is checked voxel-exactly against the app's numpy oracle:
- auto-segmentation of the whole volume (``seg_threshold``, image sent with the request);
- deepgrow clicks after the volume is in a session (``deepgrow_threshold``).
The plugin's path is what its Slicer module does: write the volume with SimpleITK (``saveNode``'s
.nii.gz), ``infer(file=...)`` with ``.nrrd``/``uint8`` and no ``result_compress``, ``get_session``
before each click, results read back with SimpleITK. Its ``client.py`` is imported from the installed
wheel at run time (``<server venv>/monailabel/plugins/slicer/MONAILabel/MONAILabelLib/client.py``),
never copied. Printed: median seconds and bytes received per call, and ours/theirs ratios.

Run: python Testing/benchmarks/bench_monailabel_clients.py [--size 256,256,120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "monailabel" / "app")]

import expected  # noqa: E402
from monailabel_server import MonaiLabelServer, server_python  # noqa: E402

from ClaraAWSLib.backends import AUTO_SEGMENT, DEEPGROW, connect  # noqa: E402
from ClaraAWSLib.core.imageio import write_image_file  # noqa: E402
from ClaraAWSLib.synthetic.phantom import make_phantom  # noqa: E402


def plugin_client_class(python: Path):
    path = python.parent.parent / "monailabel" / "plugins" / "slicer" / "MONAILabel" / "MONAILabelLib" / "client.py"
    spec = importlib.util.spec_from_file_location("monailabel_plugin_client", path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it imports cgi
        spec.loader.exec_module(module)
    return module.MONAILabelClient


def timed(call, repeats):
    seconds, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="256,256,120")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    python = server_python()
    if python is None:
        sys.exit("The MONAI Label server venv is missing; see Testing/monailabel_server.py.")
    work = Path(tempfile.mkdtemp(prefix="bench-monailabel-"))
    phantom = make_phantom(size=size, seed=4)
    volume = phantom.ct
    image_ijk = volume.array.transpose(2, 1, 0).astype(np.float32)
    seg_wanted = expected.seg_threshold(image_ijk)
    click = [int(v) for v in np.argwhere(image_ijk >= expected.SPLEEN_LOW)[len(np.argwhere(image_ijk >= 100)) // 2]]
    grow_wanted = expected.deepgrow(image_ijk, [click], [])

    server = MonaiLabelServer(python, work).start()
    print(f"server: {server.url}, started in {server.start_seconds:.1f} s; volume {size}, {volume.array.nbytes / 1e6:.1f} MB")
    try:
        ours = connect(server.url)
        theirs = plugin_client_class(python)(server.url, tmpdir=str(work))
        # Warm-up: the first inference after a start pays ITK's lazy loading on the server.
        ours.run_task(AUTO_SEGMENT, ours.model("seg_threshold"), image=volume)

        def ours_segment():
            result = ours.run_task(AUTO_SEGMENT, ours.model("seg_threshold"), image=volume)
            return result.labels().array, len(result.image_bytes)

        def theirs_segment():
            path = work / "volume.nii.gz"
            sitk.WriteImage(_sitk(volume), str(path), True)  # saveNode: default .nii.gz compression
            params = {"result_extension": ".nrrd", "result_dtype": "uint8"}
            result_file, _ = theirs.infer("seg_threshold", "volume", params, file=str(path))
            array = sitk.GetArrayFromImage(sitk.ReadImage(result_file))
            return array, Path(result_file).stat().st_size

        rows = []
        for name, call in (("ours", ours_segment), ("plugin", theirs_segment)):
            seconds, (array, received) = timed(call, args.repeats)
            assert np.array_equal(array.transpose(2, 1, 0), seg_wanted), f"{name}: auto-segmentation is not exact"
            rows.append(("auto-segment", name, seconds, received))

        session = ours.create_session(volume)
        write_image_file(volume, work / "session.nii.gz")
        theirs_session = theirs.create_session(str(work / "session.nii.gz"))["session_id"]

        def ours_click():
            result = ours.run_task(DEEPGROW, ours.model("deepgrow_threshold"), session=session, foreground=[click])
            return result.labels().array, len(result.image_bytes)

        def theirs_click():
            theirs.get_session(theirs_session)  # the plugin checks the session before every click
            params = {"foreground": [click], "background": [], "label": "spleen",
                      "result_extension": ".nrrd", "result_dtype": "uint8"}
            result_file, _ = theirs.infer("deepgrow_threshold", "volume", params, session_id=theirs_session)
            return sitk.GetArrayFromImage(sitk.ReadImage(result_file)), Path(result_file).stat().st_size

        for name, call in (("ours", ours_click), ("plugin", theirs_click)):
            seconds, (array, received) = timed(call, args.repeats)
            assert np.array_equal(array.transpose(2, 1, 0), grow_wanted), f"{name}: deepgrow click is not exact"
            rows.append(("deepgrow click", name, seconds, received))
    finally:
        server.stop()

    print(f"{'call':<16}{'client':<8}{'median s':>10}{'received B':>14}")
    for call, name, seconds, received in rows:
        print(f"{call:<16}{name:<8}{seconds:>10.3f}{received:>14,}")
    for call in ("auto-segment", "deepgrow click"):
        mine = next(r for r in rows if r[0] == call and r[1] == "ours")
        other = next(r for r in rows if r[0] == call and r[1] == "plugin")
        print(f"{call}: time ours/plugin = {mine[2] / other[2]:.2f}, bytes received ours/plugin = {mine[3] / other[3]:.3f}")


def _sitk(volume):
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.grid.spacing)
    image.SetOrigin(volume.grid.origin)
    image.SetDirection(tuple(np.asarray(volume.grid.direction).ravel()))
    return image


if __name__ == "__main__":
    main()
