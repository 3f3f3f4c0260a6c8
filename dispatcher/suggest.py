"""One way to say "did you mean": a key, the choices ranked by closeness, and where.

Used for branches (selection, subscription checks), settings and module names
(jobs). Reads like uproot's ``KeyInFileError``: what was not found, the closest
choices first, then every choice (cut short when there are many) and where.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: how close a choice must be to be suggested (``difflib`` ratio)
CUTOFF = 0.6
#: choices listed in full at most; beyond that the list is cut short
LISTED = 30


def ranked(key: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` choices closest to ``key``, closest first; a match ignoring case comes first."""
    pool = list(dict.fromkeys(choices))
    same_case = [c for c in pool if c.lower() == key.lower() and c != key]
    close = difflib.get_close_matches(key, pool, n=n, cutoff=CUTOFF)
    return list(dict.fromkeys(same_case + close))[:n]


def did_you_mean(key: str, choices: Iterable[str], *, kind: str = "choices", where: str | None = None) -> str:
    """``did you mean 'x'? (KIND: a, b, ...) in WHERE``: the tail of an error message for ``key``."""
    pool = sorted(dict.fromkeys(choices))
    close = ranked(key, pool)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    listed = ", ".join(pool[:LISTED]) + (f", ... ({len(pool)} in all)" if len(pool) > LISTED else "")
    tail = f" in {where}" if where else ""
    return f"{hint}({kind}: {listed or 'none'}){tail}"
