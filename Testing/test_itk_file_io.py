"""ITK file reads and writes never overlap in one process (SimpleITK does not promise they may: see
core/itk_io.py): a batch of four requests in flight against the reference server in this process, with
every SimpleITK file call watched and slowed so that overlaps would show."""

from __future__ import annotations

import threading
import time

import SimpleITK as sitk

from conftest import running_reference_server

from ClaraAWSLib.datasets.batch import BatchSettings, run_batch
from ClaraAWSLib.datasets.inputs import expand_inputs


class Watch:
    """How many threads were inside SimpleITK file calls at once (sitk.ReadImage calls reader.Execute itself:
    a call inside another in one thread is the same call)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = threading.local()
        self.active = self.most = self.calls = 0

    def wrap(self, function):
        def watched(*args, **kwargs):
            outermost = getattr(self.depth, "n", 0) == 0
            self.depth.n = getattr(self.depth, "n", 0) + 1
            if outermost:
                with self.lock:
                    self.active += 1
                    self.calls += 1
                    self.most = max(self.most, self.active)
            try:
                time.sleep(0.02)  # a wide window: two calls that may overlap do
                return function(*args, **kwargs)
            finally:
                self.depth.n -= 1
                if outermost:
                    with self.lock:
                        self.active -= 1
        return watched


def test_no_two_itk_file_calls_run_at_once_in_a_batch_against_an_in_process_server(tmp_path, monkeypatch, phantom_small):
    from ClaraAWSLib.backends import AUTO_SEGMENT, connect

    watch = Watch()
    for name in ("ReadImage", "WriteImage"):
        monkeypatch.setattr(sitk, name, watch.wrap(getattr(sitk, name)))
    for name in ("Execute", "ReadImageInformation"):
        monkeypatch.setattr(sitk.ImageFileReader, name, watch.wrap(getattr(sitk.ImageFileReader, name)))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(6):
        sitk.WriteImage(phantom_small.ct.to_sitk(), str(inputs / f"case_{n}.nii.gz"))
    watch.most = watch.calls = 0
    with running_reference_server() as server:
        client = connect(server.url)
        model = client.model("phantom_abdomen_seg")
        settings = BatchSettings(outdir=tmp_path / "out", label_names=model["labels"], model_name=model["name"],
                                 workers=4)
        report = run_batch(expand_inputs(str(inputs)),
                           lambda volume: client.run_task(AUTO_SEGMENT, model, image=volume).labels(), settings)
    assert [row.status for row in report.rows] == ["ok"] * 6, [row.message for row in report.rows]
    # Each case: read the input, the server reads the upload and writes its answer, the client writes its
    # output and reads it back; every one of those ran alone.
    assert watch.calls >= 6 * 4 and watch.most == 1, (watch.calls, watch.most)
