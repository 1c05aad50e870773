"""argparse value types shared by the commands: numbers with a lower bound, checked at parse time."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(kind: type, accept: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


def positive(kind: type = int) -> Callable[[str], float]:
    """argparse type: a number greater than 0."""
    return _number(kind, lambda v: v > 0, "greater than 0")


def non_negative(kind: type = float) -> Callable[[str], float]:
    """argparse type: a number of at least 0."""
    return _number(kind, lambda v: v >= 0, "at least 0")
