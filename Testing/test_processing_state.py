"""The auto-segmentation state machine and what the Apply button shows in each state."""

from __future__ import annotations

import itertools

import pytest

from ClaraAWSLib.panel.processing_state import (
    ALLOWED_TRANSITIONS,
    CANCEL_TEXT,
    START_TEXT,
    ProcessingState as S,
    ProcessingStateMachine,
    StateTransitionError,
    apply_button_view,
    inputs_editable,
    progress_visible,
    result_actions_visible,
)


def test_a_successful_run_goes_idle_running_importing_done_and_can_run_again():
    changes = []
    machine = ProcessingStateMachine(on_change=lambda old, new: changes.append((old, new)))
    machine.start()
    machine.result_arrived()
    machine.imported()
    machine.start()
    assert changes == [(S.IDLE, S.RUNNING), (S.RUNNING, S.IMPORTING), (S.IMPORTING, S.DONE), (S.DONE, S.RUNNING)]


def test_cancel_goes_through_cancelling_back_to_idle():
    machine = ProcessingStateMachine()
    machine.start()
    assert machine.request_cancel() is True
    assert machine.state is S.CANCELLING and machine.busy
    assert machine.request_cancel() is False  # a second click changes nothing
    machine.cancelled()
    assert machine.state is S.IDLE and not machine.busy


@pytest.mark.parametrize("state_path", [[], ["start", "result_arrived"], ["start", "fail"]])
def test_cancel_is_refused_when_no_request_is_out(state_path):
    machine = ProcessingStateMachine()
    for step in state_path:
        getattr(machine, step)()
    before = machine.state
    assert machine.request_cancel() is False
    assert machine.state is before


def test_errors_during_request_or_import_end_in_failed_and_a_retry_is_allowed():
    machine = ProcessingStateMachine()
    machine.start()
    machine.fail()
    assert machine.state is S.FAILED
    machine.start()
    machine.result_arrived()
    machine.fail()
    assert machine.state is S.FAILED
    machine.reset()
    assert machine.state is S.IDLE


def test_every_transition_outside_the_table_is_refused_and_leaves_the_state_alone():
    for source, target in itertools.product(S, S):
        machine = ProcessingStateMachine()
        machine._state = source  # place the machine in each state directly
        if target in ALLOWED_TRANSITIONS[source]:
            machine.transition(target)
            assert machine.state is target
        else:
            with pytest.raises(StateTransitionError):
                machine.transition(target)
            assert machine.state is source


def test_a_result_cannot_be_imported_twice_or_after_a_cancel():
    machine = ProcessingStateMachine()
    machine.start()
    machine.request_cancel()
    with pytest.raises(StateTransitionError):
        machine.result_arrived()
    machine.cancelled()
    with pytest.raises(StateTransitionError):
        machine.imported()


def test_reset_only_leaves_finished_states():
    machine = ProcessingStateMachine()
    machine.start()
    machine.reset()
    assert machine.state is S.RUNNING


@pytest.mark.parametrize(
    "state, ready, text, enabled",
    [
        (S.IDLE, True, START_TEXT, True),
        (S.IDLE, False, START_TEXT, False),
        (S.DONE, True, START_TEXT, True),
        (S.FAILED, False, START_TEXT, False),
        (S.RUNNING, False, CANCEL_TEXT, True),  # Cancel works whatever the inputs say
        (S.RUNNING, True, CANCEL_TEXT, True),
        (S.IMPORTING, True, CANCEL_TEXT, False),
        (S.CANCELLING, True, "Cancelling…", False),
    ],
)
def test_apply_button_view(state, ready, text, enabled):
    view = apply_button_view(state, ready=ready, not_ready_reason="Select an input volume.")
    assert (view.text, view.enabled) == (text, enabled)
    assert view.tooltip


def test_the_not_ready_reason_becomes_the_tooltip():
    view = apply_button_view(S.IDLE, ready=False, not_ready_reason="Connect to a server first.")
    assert view.tooltip == "Connect to a server first."


def test_panel_visibility_rules():
    assert [s for s in S if progress_visible(s)] == [S.RUNNING, S.IMPORTING, S.CANCELLING]
    assert [s for s in S if result_actions_visible(s)] == [S.DONE]
    assert [s for s in S if inputs_editable(s)] == [S.IDLE, S.DONE, S.FAILED]


from ClaraAWSLib.panel.processing_state import (  # noqa: E402
    PanelInputs,
    annotate_blocker,
    auto_segment_blocker,
    extreme_points_text,
    interactive_blocker,
)

READY = PanelInputs(connected=True, model="m", has_volume=True, has_segment=True, extreme_points=6)


def test_auto_segment_needs_a_connection_a_model_and_a_volume_in_that_order():
    assert auto_segment_blocker(READY) == ""
    assert "Connect" in auto_segment_blocker(PanelInputs(False, "", False))
    assert "model" in auto_segment_blocker(PanelInputs(True, "", False))
    assert "volume" in auto_segment_blocker(PanelInputs(True, "m", False))


def test_interactive_edits_need_a_segment_and_an_idle_auto_segmentation():
    assert interactive_blocker(READY) == ""
    assert "segment" in interactive_blocker(PanelInputs(True, "m", True, has_segment=False))
    assert "Wait" in interactive_blocker(PanelInputs(True, "m", True, has_segment=True, auto_busy=True))


def test_annotate_needs_six_extreme_points():
    assert annotate_blocker(READY) == ""
    five = PanelInputs(True, "m", True, has_segment=True, extreme_points=5)
    assert annotate_blocker(five) == "Place at least 6 extreme points; 5 placed."
    # a missing connection is reported before the points
    assert "Connect" in annotate_blocker(PanelInputs(False, "m", True, True, extreme_points=2))


def test_extreme_points_text():
    assert extreme_points_text(2) == "2 of 6 extreme points placed."
    assert extreme_points_text(7) == "7 extreme points placed: ready to annotate."
