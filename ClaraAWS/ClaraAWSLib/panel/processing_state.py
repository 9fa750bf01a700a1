"""The auto-segmentation run as a small state machine, and what the panel shows in each state.

The widget only renders :func:`apply_button_view`; which transitions are legal, and what the Apply
button says and whether it can be pressed, is decided here so it can be tested without Qt.

    idle ──start──▶ running ──result──▶ importing ──imported──▶ done
                      │  ╲                  │
                   cancel  error──▶ failed ◀┘ (import error)
                      ▼
                  cancelling ──worker ended──▶ idle

``done`` and ``failed`` accept ``start`` again (and ``reset`` back to ``idle``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Optional

from ..backends import MIN_EXTREME_POINTS  # the same rule the logic enforces


class ProcessingState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    IMPORTING = "importing"
    DONE = "done"
    CANCELLING = "cancelling"
    FAILED = "failed"


class StateTransitionError(RuntimeError):
    """A transition was asked for that the current state does not allow (a programming error)."""


S = ProcessingState

ALLOWED_TRANSITIONS: Dict[ProcessingState, FrozenSet[ProcessingState]] = {
    S.IDLE: frozenset({S.RUNNING}),
    S.RUNNING: frozenset({S.IMPORTING, S.CANCELLING, S.FAILED}),
    S.IMPORTING: frozenset({S.DONE, S.FAILED}),
    S.CANCELLING: frozenset({S.IDLE}),
    S.DONE: frozenset({S.RUNNING, S.IDLE}),
    S.FAILED: frozenset({S.RUNNING, S.IDLE}),
}

#: States in which a request is out and the panel must not start another one.
BUSY_STATES: FrozenSet[ProcessingState] = frozenset({S.RUNNING, S.IMPORTING, S.CANCELLING})


@dataclass(frozen=True)
class ButtonView:
    text: str
    enabled: bool
    tooltip: str


START_TEXT = "Auto-segment"
CANCEL_TEXT = "Cancel"


def apply_button_view(state: ProcessingState, *, ready: bool, not_ready_reason: str = "") -> ButtonView:
    """What the Apply button shows.

    ``ready`` says whether a new run could start (server connected, model and volume chosen);
    ``not_ready_reason`` is the tooltip that tells the user what is missing.
    """
    if state is S.RUNNING:
        return ButtonView(CANCEL_TEXT, True, "Stop the request; the scene is left as it was.")
    if state is S.IMPORTING:
        return ButtonView(CANCEL_TEXT, False, "Importing the result; this cannot be interrupted.")
    if state is S.CANCELLING:
        return ButtonView("Cancelling…", False, "Waiting for the request to stop.")
    if ready:
        return ButtonView(START_TEXT, True, "Send the volume to the server and import the segments it returns.")
    return ButtonView(START_TEXT, False, not_ready_reason or "Connect to a server and choose a model and a volume.")


def progress_visible(state: ProcessingState) -> bool:
    return state in BUSY_STATES


def result_actions_visible(state: ProcessingState) -> bool:
    """The "Show in Segment Editor" button makes sense only after a successful import."""
    return state is S.DONE


def inputs_editable(state: ProcessingState) -> bool:
    """Volume, segmentation and model cannot change under a running request."""
    return state not in BUSY_STATES


class ProcessingStateMachine:
    """Holds the current state; every change goes through :meth:`transition` and is announced."""

    def __init__(self, on_change: Optional[Callable[[ProcessingState, ProcessingState], None]] = None) -> None:
        self._state = S.IDLE
        self._cancel_armed = False
        self._listeners: List[Callable[[ProcessingState, ProcessingState], None]] = []
        if on_change is not None:
            self._listeners.append(on_change)

    @property
    def state(self) -> ProcessingState:
        return self._state

    @property
    def busy(self) -> bool:
        return self._state in BUSY_STATES

    def add_listener(self, listener: Callable[[ProcessingState, ProcessingState], None]) -> None:
        self._listeners.append(listener)

    def can(self, target: ProcessingState) -> bool:
        return target in ALLOWED_TRANSITIONS[self._state]

    def transition(self, target: ProcessingState) -> None:
        if not self.can(target):
            raise StateTransitionError(f"Cannot go from '{self._state.value}' to '{target.value}'.")
        previous, self._state = self._state, target
        for listener in list(self._listeners):
            listener(previous, target)

    # Named steps read better at the call sites than bare transitions.
    def start(self, cancel_armed: bool = True) -> None:
        """Running; with ``cancel_armed=False`` clicks count as Cancel only after :meth:`arm_cancel`."""
        self._cancel_armed = cancel_armed
        self.transition(S.RUNNING)

    def result_arrived(self) -> None:
        self.transition(S.IMPORTING)

    def imported(self) -> None:
        self.transition(S.DONE)

    def fail(self) -> None:
        self.transition(S.FAILED)

    def arm_cancel(self) -> None:
        """From now on a click on the button means Cancel (call after the clicks queued while starting are gone)."""
        self._cancel_armed = True

    def request_cancel(self) -> bool:
        """Ask to cancel; returns False (and changes nothing) when there is nothing to cancel.

        While a run is starting and not yet armed, a click is one the user made on "Auto-segment" (a double
        click, queued behind the blocking export): it is ignored instead of cancelling the run.
        """
        if not self.can(S.CANCELLING) or not self._cancel_armed:
            return False
        self.transition(S.CANCELLING)
        return True

    def cancelled(self) -> None:
        self.transition(S.IDLE)

    def reset(self) -> None:
        """Back to idle from a finished run (for example when the input volume changes)."""
        if self._state in (S.DONE, S.FAILED):
            self.transition(S.IDLE)


# --- why a request cannot be sent yet (the tooltip of a disabled button) -----------------------


@dataclass(frozen=True)
class PanelInputs:
    """What the panel has chosen so far; each rule below returns "" when a request may go out."""

    connected: bool
    model: str
    has_volume: bool
    has_segment: bool = False
    auto_busy: bool = False
    extreme_points: int = 0


def auto_segment_blocker(inputs: PanelInputs) -> str:
    if not inputs.connected:
        return "Connect to a server first."
    if not inputs.model:
        return "The server offers no segmentation model; choose another server."
    if not inputs.has_volume:
        return "Choose an input volume."
    return ""


def interactive_blocker(inputs: PanelInputs) -> str:
    if not inputs.connected:
        return "Connect to a server first."
    if not inputs.model:
        return "The server offers no model for this; choose another server."
    if not inputs.has_volume:
        return "Choose an input volume."
    if not inputs.has_segment:
        return "Choose the segment to edit, or click New."
    if inputs.auto_busy:
        return "Wait for the auto-segmentation to finish."
    return ""


def annotate_blocker(inputs: PanelInputs) -> str:
    blocker = interactive_blocker(inputs)
    if not blocker and inputs.extreme_points < MIN_EXTREME_POINTS:
        blocker = f"Place at least {MIN_EXTREME_POINTS} extreme points; {inputs.extreme_points} placed."
    return blocker


def extreme_points_text(count: int) -> str:
    if count < MIN_EXTREME_POINTS:
        return f"{count} of {MIN_EXTREME_POINTS} extreme points placed."
    return f"{count} extreme points placed: ready to annotate."


@dataclass(frozen=True)
class BarSettings:
    """How the progress bar and its label show a progress view."""

    minimum: int
    maximum: int
    value: int
    bar_text: str
    label_text: str


def bar_settings(text: str, value: int, maximum: int) -> BarSettings:
    """A bar of unknown length (0..0) draws no text in Qt, so its text goes into the label beside it."""
    if maximum <= 0:
        return BarSettings(0, 0, 0, "", text)
    return BarSettings(0, maximum, min(max(value, 0), maximum), text, "")


class ConnectTickets:
    """Numbers connect attempts so that only the newest one's answer is used (Enter and Connect, twice)."""

    def __init__(self) -> None:
        self._latest = 0

    def begin(self) -> int:
        self._latest += 1
        return self._latest

    def is_current(self, ticket: int) -> bool:
        return ticket == self._latest

