"""argparse types shared by the batch and service commands: whole numbers and seconds within bounds."""

from __future__ import annotations

import argparse
from typing import Callable, Optional


def whole_number(minimum: int, maximum: Optional[int] = None) -> Callable[[str], int]:
    """A type accepting whole numbers from ``minimum`` to ``maximum`` (no limit when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is more than {maximum}")
        return value

    return parse


def seconds(text: str) -> float:
    """A positive number of seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} s is not between 0 and 86400 seconds")
    return value
