"""Panel rules that would otherwise only fail inside Slicer: consent, the progress bar, connects that overlap,
a double click on Auto-segment, Slicer 5.8's parameter-node binding, and Cancel during a long wait."""

from __future__ import annotations

import threading
import time

import pytest

from ClaraAWSLib.panel.consent import ConsentBook, server_key
from ClaraAWSLib.panel.jobs import JobOutcome, JobRunner
from ClaraAWSLib.panel.processing_state import ConnectTickets, ProcessingState, ProcessingStateMachine, bar_settings
from ClaraAWSLib.panel.settings_store import MemorySettingsStore
from ClaraAWSLib.panel.slicer_compat import connect_gui


def test_dont_ask_again_belongs_to_one_server_and_can_be_taken_back():
    store = MemorySettingsStore()
    book = ConsentBook(store)
    first, second = "https://clara.example.org", "https://other.example.org:8443/aiaa"
    assert book.needs_asking(first) and book.needs_asking(second)
    book.agreed(first, dont_ask_again=True)
    assert not book.needs_asking(first)
    assert book.needs_asking(second)  # the tick for one server silences nobody else
    assert not ConsentBook(store).needs_asking("https://user:pw@CLARA.example.org/path")  # remembered, same server
    book.forget(first)
    assert ConsentBook(store).needs_asking(first) and book.needs_asking(first)
    book.agreed(first, dont_ask_again=True)
    ConsentBook(store).forget(first)  # "Ask again" on the settings page, another ConsentBook of the same store
    assert book.needs_asking(first)  # reaches the panel's book at once


def test_a_plain_http_server_is_asked_about_in_every_session_whatever_was_ticked():
    store = MemorySettingsStore()
    book = ConsentBook(store)
    url = "http://10.0.0.5:5000"
    book.agreed(url, dont_ask_again=True)
    assert not book.needs_asking(url)  # not twice in one session
    assert ConsentBook(store).needs_asking(url)  # but again in the next one
    assert server_key(url) == "http://10.0.0.5:5000"


def test_a_bar_of_unknown_length_puts_its_text_beside_it():
    busy = bar_settings("Waiting for the server (segmentation)…", 0, 0)
    assert (busy.minimum, busy.maximum) == (0, 0) and busy.bar_text == "" and "Waiting" in busy.label_text
    known = bar_settings("Uploading 3.0 of 40.0 MB", 8, 100)
    assert (known.maximum, known.value, known.bar_text, known.label_text) == (100, 8, "Uploading 3.0 of 40.0 MB", "")
    assert bar_settings("x", 250, 100).value == 100


def test_only_the_newest_connect_counts():
    tickets = ConnectTickets()
    first = tickets.begin()
    second = tickets.begin()  # Enter pressed while the first connect was still out
    assert not tickets.is_current(first) and tickets.is_current(second)


def test_a_click_queued_during_the_start_does_not_cancel_the_run():
    states = ProcessingStateMachine()
    states.start(cancel_armed=False)
    assert states.busy and not states.request_cancel()  # the queued second click of a double click is swallowed…
    assert states.state is ProcessingState.RUNNING  # …and the run goes on
    states.arm_cancel()
    assert states.request_cancel() and states.state is ProcessingState.CANCELLING


class _Slicer58ParameterNode:
    """connectGui keeps the binding under a tag but returns None, as Slicer 5.8.1 does."""

    def __init__(self):
        self._parameterGUIs = {}
        self._next = 0

    def connectGui(self, gui):
        self._next += 1
        self._parameterGUIs[self._next] = {"gui": gui}

    def disconnectGui(self, tag):
        self._parameterGUIs.pop(tag, None)


class _Slicer512ParameterNode(_Slicer58ParameterNode):
    def connectGui(self, gui):
        super().connectGui(gui)
        return self._next


@pytest.mark.parametrize("node_class", [_Slicer58ParameterNode, _Slicer512ParameterNode])
def test_every_gui_binding_can_be_removed_again(node_class):
    node = node_class()
    for _ in range(5):  # five module enters and exits
        tag = connect_gui(node, object())
        assert tag is not None
        node.disconnectGui(tag)
    assert node._parameterGUIs == {}


def test_cancel_during_a_long_wait_is_immediate_and_the_late_answer_is_dropped():
    runner = JobRunner()
    release = threading.Event()
    seen = []

    def work(progress, cancel):
        release.wait(30)  # a server that takes its time and ignores the cancel flag
        return "late answer"

    job = runner.start("auto", work, on_result=seen.append, on_cancelled=lambda: seen.append("cancelled"))
    started = time.perf_counter()
    assert runner.abandon("auto")
    assert seen == ["cancelled"] and time.perf_counter() - started < 1.0  # idle now, not after the wait
    assert not runner.is_running("auto")
    release.set()
    for _ in range(100):
        runner.poll()
        if job.outcome is not JobOutcome.RUNNING:
            break
        time.sleep(0.02)
    assert job.outcome is JobOutcome.SUPERSEDED and seen == ["cancelled"]  # the answer never arrived
    assert not runner.abandon("auto")
    runner.shutdown(timeout=2.0)


def test_opening_a_server_changes_nothing_until_the_gui_uses_it(harness, reference_server):
    from ClaraAWSLib import ClaraAWSLogic

    logic = ClaraAWSLogic(harness.scene)
    try:
        older_client, older_models = logic.openServer(reference_server.url)
        newer_client, newer_models = logic.openServer(reference_server.url)
        assert logic.client is None and logic.models == []  # a worker's open touches no state
        logic.useServer(newer_client, newer_models)
        older_client.close()  # what the panel does with an answer that a newer connect superseded
        assert logic.client is newer_client and [m["name"] for m in logic.models] == [m["name"] for m in newer_models]
        assert logic.refreshModels()
    finally:
        logic.cleanup()


def test_the_settings_page_values_reach_the_panel_rules():
    from ClaraAWSLib.panel import settings_store as store_rules

    store = MemorySettingsStore()
    assert store_rules.update_on_every_click(store) and not store_rules.surface_after_import(store)
    store.setValue(store_rules.KEY_UPDATE_ON_EVERY_CLICK, "false")  # how QSettings keeps a ticked-off box
    store.setValue(store_rules.KEY_SURFACE_AFTER_IMPORT, "true")
    store.setValue(store_rules.KEY_DEFAULT_MODEL + "deepgrow", " clara_deepgrow_3d ")
    assert not store_rules.update_on_every_click(store) and store_rules.surface_after_import(store)
    assert store_rules.default_model(store, "deepgrow") == "clara_deepgrow_3d"
    for url in ("https://a.example.org", "https://b.example.org"):
        store_rules.remember_url(store, url)
    assert store_rules.forget_url(store, "https://a.example.org/") == ["https://b.example.org"]
    assert store_rules.url_history(store) == ["https://b.example.org"]


def test_results_can_come_with_their_3d_surface(harness, reference_server):
    import numpy as np

    import slicer_scene as ss
    from ClaraAWSLib import ClaraAWSLogic
    from ClaraAWSLib.synthetic.phantom import make_phantom

    phantom = make_phantom(size=(48, 48, 20), spacing=(6.0, 6.0, 12.0), seed=2)
    volume = ss.add_volume(harness, phantom.ct)
    logic = ClaraAWSLogic(harness.scene)
    try:
        logic.connect(reference_server.url)
        plain = logic.autoSegment(volume, "phantom_abdomen_seg")
        surface = "Closed surface"
        assert not plain.GetSegmentation().ContainsRepresentation(surface)
        logic.createSurfaceAfterImport = True
        with_surface = logic.autoSegment(volume, "phantom_abdomen_seg")
        segmentation = with_surface.GetSegmentation()
        assert segmentation.ContainsRepresentation(surface)
        for n in range(segmentation.GetNumberOfSegments()):
            voxels = ss.segment_on_volume(with_surface, segmentation.GetNthSegmentID(n), volume).sum()
            points = segmentation.GetNthSegment(n).GetRepresentation(surface).GetNumberOfPoints()
            assert (points > 0) == (voxels > 0)  # a surface for every segment that has voxels
        assert np.count_nonzero([segmentation.GetNthSegment(n).GetRepresentation(surface).GetNumberOfPoints()
                                 for n in range(segmentation.GetNumberOfSegments())]) >= 2
    finally:
        logic.cleanup()
