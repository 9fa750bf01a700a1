"""Playing a GPU task on a CPU machine: every model run waits a fixed time, and only so many run at once.

The built-in models answer in milliseconds and run in every request's thread, so one reference server
would look like an endless GPU. A Clara or MONAI Label task runs its model on one GPU: a second request
waits for the first. ``clara-aws serve --inference-delay 2 --inference-slots 1`` plays that, so a batch
through a load balancer in front of several servers scales as it would across the ECS service's tasks.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import ContextManager, Optional

from ..core.errors import InputError


@dataclass(frozen=True)
class GpuPlay:
    #: Seconds every model run waits first, as a GPU model's latency would.
    delay_s: float = 0.0
    #: Model runs at once (None: any number, the built-in models' own behaviour).
    slots: Optional[int] = None
    _gate: Optional[threading.BoundedSemaphore] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.delay_s, (int, float)) or not math.isfinite(self.delay_s) or not 0 <= self.delay_s <= 3600:
            raise InputError(f"The inference delay (--inference-delay) must be 0 to 3600 seconds, not {self.delay_s!r}.")
        if self.slots is not None:
            if isinstance(self.slots, bool) or not isinstance(self.slots, int) or not 1 <= self.slots <= 1024:
                raise InputError(f"The inference slots (--inference-slots) must be a whole number from 1 to 1024, not {self.slots!r}.")
            object.__setattr__(self, "_gate", threading.BoundedSemaphore(self.slots))

    def slot(self) -> ContextManager[object]:
        """Held during one model run: waits while all slots are taken."""
        return self._gate if self._gate is not None else contextlib.nullcontext()

    def latency(self) -> None:
        """The GPU model's own time, spent in its slot."""
        if self.delay_s > 0:
            time.sleep(self.delay_s)


def add_gpu_play_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inference-delay", type=float, default=0.0, metavar="S",
                        help="make every model run take S seconds more, as a GPU model's latency (default 0)")
    parser.add_argument("--inference-slots", type=int, default=None, metavar="N",
                        help="run at most N models at once, as one GPU does with N=1 (default: no limit)")


def gpu_play_from_arguments(args: argparse.Namespace) -> GpuPlay:
    return GpuPlay(delay_s=args.inference_delay, slots=args.inference_slots)
