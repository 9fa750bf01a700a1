"""Progress-bar text for each stage of a request."""

from __future__ import annotations

import pytest

from ClaraAWSLib.core.progress import ProgressView, Stage, StageProgress, describe, describe_any


def test_upload_shows_megabytes_and_percent():
    view = describe(StageProgress(Stage.UPLOADING, 12_300_000, 36_000_000))
    assert view == ProgressView("Uploading 12.3 of 36.0 MB", 34, 100)


def test_a_finished_upload_becomes_waiting_for_the_server():
    view = describe(StageProgress(Stage.UPLOADING, 36_000_000, 36_000_000, "inference"))
    assert view == ProgressView("Waiting for the server (inference)…")


def test_out_of_range_counts_are_clamped():
    assert describe(StageProgress(Stage.UPLOADING, -5, 100)).value == 0
    assert describe(StageProgress(Stage.UPLOADING, 500, 100)).maximum == 0  # treated as finished


@pytest.mark.parametrize(
    "progress, text",
    [
        (StageProgress(Stage.WAITING, detail="deepgrow"), "Waiting for the server (deepgrow)…"),
        (StageProgress(Stage.WAITING), "Waiting for the server (inference)…"),
        (StageProgress(Stage.DOWNLOADING), "Downloading"),
        (StageProgress(Stage.DOWNLOADING, 2_500_000), "Downloading (2.5 MB)"),
        (StageProgress(Stage.DOWNLOADING, 40_000, 40_000), "Downloading"),
        (StageProgress(Stage.IMPORTING), "Importing"),
        (StageProgress(Stage.ENCODING), "Compressing the volume…"),
        (StageProgress(Stage.UPLOADING), "Uploading…"),
    ],
)
def test_busy_stages(progress, text):
    view = describe(progress)
    assert view.text == text and view.maximum == 0


def test_a_download_of_known_size_shows_a_percentage():
    view = describe(StageProgress(Stage.DOWNLOADING, 1_000_000, 4_000_000))
    assert (view.text, view.value, view.maximum) == ("Downloading 1.0 of 4.0 MB", 25, 100)


def test_describe_any_accepts_the_client_upload_callback_shape_and_mappings():
    assert describe_any((5_000_000, 10_000_000)).text == "Uploading 5.0 of 10.0 MB"
    assert describe_any((10, 10), detail="dextr3d").text == "Waiting for the server (dextr3d)…"
    assert describe_any({"stage": "downloading"}).text == "Downloading"
    assert describe_any({"stage": "UPLOADING", "done": 1e6, "total": 2e6}).value == 50
    assert describe_any("Connected").text == "Connected"
    assert describe_any({"stage": "unknown", "text": "Thinking"}).text == "Thinking"
    assert describe_any(object()).text == "Working…"


def test_error_text_of_a_clara_error_keeps_its_sentence_and_details():
    from ClaraAWSLib.core.errors import GatewayTimeoutError
    from ClaraAWSLib.core.progress import error_text

    error = GatewayTimeoutError("The load balancer gave up after 60 s; raise its idle timeout.", status=504,
                                details="<html>504 Gateway Time-out</html>")
    assert error_text("Auto-segmentation failed.", error) == (
        "Auto-segmentation failed.\n\nThe load balancer gave up after 60 s; raise its idle timeout.",
        "<html>504 Gateway Time-out</html>",
    )


def test_error_text_of_an_unexpected_error_puts_the_traceback_in_details():
    from ClaraAWSLib.core.progress import error_text

    try:
        {}["missing"]
    except KeyError as caught:
        message, details = error_text("Import failed.", caught)
    assert message == "Import failed.\n\n'missing'"
    assert "Traceback" in details and "KeyError" in details


@pytest.mark.parametrize("count, text", [(0, "0.0 MB"), (412_000, "0.4 MB"), (12_500_000, "12.5 MB"),
                                         (3_210_000_000, "3.2 GB"), (7 * 10**12, "7.0 TB"),
                                         (10**30, "more than 1000 TB")])
def test_sizes_in_sentences_pick_a_unit_a_person_reads(count, text):
    from ClaraAWSLib.core.sizes import size_text

    assert size_text(count) == text
