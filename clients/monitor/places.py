"""Where a key of a TOML file sits: its line number, for error messages.

``tomllib`` gives values without positions, so the text is scanned once: each
table header (``[monitor]``, ``[[histogram]]``, ``[[tab.canvas]]``) opens a path
such as ``("tab", 1, "canvas", 0)``, and each ``key = ...`` line under it adds
``key``. Arrays of tables are counted per parent, as TOML does. This reads the
usual layout of a config file; a key it cannot place falls back to the line of
the closest enclosing table, then to line 1.
"""

from __future__ import annotations

import re

__all__ = ["KeyPath", "key_lines", "line_of"]

KeyPath = tuple  # of str (keys) and int (array-of-tables indices)

_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\-]+)\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each table and key path of a TOML text to its 1-based line.

    Args:
        text (str): the TOML file's text.

    Returns:
        dict[tuple, int]: e.g. ``{("histogram", 0): 5, ("histogram", 0, "bins"): 8}``.
    """
    lines: dict[KeyPath, int] = {}
    counts: dict[KeyPath, int] = {}
    current: KeyPath = ()
    for number, line in enumerate(text.splitlines(), start=1):
        array = _ARRAY_HEADER.match(line)
        table = None if array else _TABLE_HEADER.match(line)
        if array or table:
            names = (array or table).group(1).split(".")  # type: ignore[union-attr]
            path: KeyPath = ()
            for name in names[:-1]:  # a dotted header continues the newest entry of each array above it
                path = path + (name,)
                if path in counts:
                    path = path + (counts[path] - 1,)
            path = path + (names[-1],)
            if array:
                index = counts.get(path, 0)
                counts[path] = index + 1
                path = path + (index,)
            current = path
            lines.setdefault(current, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(current + (key.group(1),), number)
    return lines


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int:
    """The line of ``path``, else of its closest enclosing table, else 1.

    Args:
        lines (dict): from :func:`key_lines`.
        path (tuple): keys and indices, e.g. ``("histogram", 2, "range")``.
    """
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1
