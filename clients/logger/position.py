"""Where in the source the logger is: the last record logged per stream, and the prescale counts.

The position is what makes a restart exactly-once: the logger asks the server
for the file of the earliest stream's last record (``Subscription(start=FILE)``)
and drops every record at or before each stream's last logged one. Files compare
by name, as the server orders them.
"""

from __future__ import annotations

import numpy as np


class Position:
    """Per stream, the source file and entry of the last record logged, and passing records seen.

    Args:
        state (dict | None): a position as :meth:`to_dict` made it (from the journal); default empty.
    """

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.last: dict[str, tuple[str, int]] = {s: (f, int(e)) for s, (f, e) in state.get("last", {}).items()}
        self.seen: dict[str, int] = {s: int(n) for s, n in state.get("seen", {}).items()}

    def to_dict(self) -> dict:
        return {"last": {s: [f, e] for s, (f, e) in self.last.items()}, "seen": dict(self.seen)}

    def copy(self) -> Position:
        return Position(self.to_dict())

    def resume_file(self) -> str | None:
        """The file to resume from: the earliest file holding a stream's last logged record (None: the start)."""
        files = [f for f, _ in self.last.values()]
        return min(files) if files else None

    def new_mask(self, stream: str, file: str, entries: np.ndarray) -> np.ndarray:
        """Which of ``entries`` (of ``stream`` in ``file``) come after the last record logged."""
        entries = np.asarray(entries)
        if stream not in self.last:
            return np.ones(len(entries), dtype=bool)
        last_file, last_entry = self.last[stream]
        if file < last_file:
            return np.zeros(len(entries), dtype=bool)
        if file > last_file:
            return np.ones(len(entries), dtype=bool)
        return entries > last_entry

    def prescale_mask(self, stream: str, n: int, prescale: int) -> np.ndarray:
        """Of ``n`` new passing records of ``stream``, which the prescale keeps (the 1st, (p+1)th, ...)."""
        seen = self.seen.get(stream, 0)
        return (np.arange(seen, seen + n) % prescale) == 0

    def advance(self, stream: str, file: str, last_entry: int, passed: int) -> None:
        """Record that ``passed`` more passing records of ``stream`` were handled, up to ``last_entry`` of ``file``."""
        self.last[stream] = (file, int(last_entry))
        self.seen[stream] = self.seen.get(stream, 0) + passed
