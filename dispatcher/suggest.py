"""One way to say "did you mean": a key, the choices ranked by closeness, and where.

Used for branches (selection, subscription checks), settings and module names
(jobs). Reads like uproot's ``KeyInFileError``: what was not found, the closest
choices first, then every choice, closest first (cut short when there are many),
and where.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: how close a choice must be to be suggested (``difflib`` ratio, case ignored or not)
CUTOFF = 0.6
#: choices listed in full at most; beyond that the list is cut short
LISTED = 30


def closeness(key: str, choice: str) -> float:
    """How alike ``key`` and ``choice`` are, from 0 to 1: the better of the exact and the case-blind ratio."""
    return max(
        difflib.SequenceMatcher(None, key, choice).ratio(),
        difflib.SequenceMatcher(None, key.lower(), choice.lower()).ratio(),
    )


def by_closeness(key: str, choices: Iterable[str]) -> list[str]:
    """Every distinct choice, the closest to ``key`` first (ties in alphabetical order)."""
    return sorted(dict.fromkeys(choices), key=lambda choice: (-closeness(key, choice), choice))


def ranked(key: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` choices close enough to ``key`` to suggest, closest first.

    A choice that differs from ``key`` only in case is surely the one meant: it is
    then the only suggestion.
    """
    pool = list(dict.fromkeys(choices))
    same = [choice for choice in pool if choice.lower() == key.lower()]
    if same:
        return same[:n]
    return [choice for choice in by_closeness(key, pool)[:n] if closeness(key, choice) >= CUTOFF]


def did_you_mean(key: str, choices: Iterable[str], *, kind: str = "choices", where: str | None = None,
                 listed: int = LISTED) -> str:
    """``did you mean 'x'? (KIND: x, y, ...) in WHERE``: the tail of an error message for ``key``.

    Args:
        key (str): what was asked for and not found.
        choices (Iterable[str]): what would have been right.
        kind (str): what the choices are, e.g. ``"branches"``; default ``"choices"``.
        where (str or None): where they were looked for, e.g. ``"file run1.root"``; default not said.
        listed (int): the most choices listed before ``...``; default :data:`LISTED`.
    """
    pool = by_closeness(key, choices)
    close = ranked(key, pool)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    shown = ", ".join(pool[:listed]) + (", ..." if len(pool) > listed else "")
    tail = f" in {where}" if where else ""
    return f"{hint}({kind}: {shown or 'none'}){tail}"
