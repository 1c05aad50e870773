"""The one exception type for mistakes a user can fix (bad files, names, weights), and the helpers
that keep its messages short when they echo what the user sent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

NAME_CHARS = 40
"""Longest echoed name; longer ones are cut with "..."."""
LISTED_NAMES = 5
"""Most names echoed from a list; the rest are counted ("... and 995 more")."""


class UserError(ValueError):
    """Bad input from the user; the CLI prints its message on one line and exits with code 2."""


def shorten(text: str, limit: int = NAME_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "..." when cut."""
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def quoted(name: str) -> str:
    """A name as echoed in a message: quoted, and cut to ``NAME_CHARS``."""
    return repr(shorten(name))


def names_text(names: Iterable[str], limit: int = LISTED_NAMES) -> str:
    """``"'a', 'b', 'c'"``, or ``"'a', 'b', 'c', 'd', 'e' ... and 995 more"`` past ``limit`` names."""
    names = list(names)
    text = ", ".join(quoted(n) for n in names[:limit])
    return text + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def weights_text(weights: Mapping[str, float], limit: int = LISTED_NAMES) -> str:
    """``"{'candy': -1.0}"``, with names cut and at most ``limit`` entries shown."""
    items = list(weights.items())
    text = ", ".join(f"{quoted(k)}: {v!r}" for k, v in items[:limit])
    return "{" + text + (f" ... and {len(items) - limit} more" if len(items) > limit else "") + "}"
