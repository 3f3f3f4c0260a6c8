"""What the keep-up strategies (``inorder``, ``newest``, ``synced``) share: the file they serve from and its streams."""

from __future__ import annotations

from .position import FilePosition
from .reader import StreamReader


class Delivery:
    """A keep-up strategy: what comes next, from the current file and the subscribed streams.

    Args:
        position (FilePosition): the current file.
        reader (StreamReader): the subscribed streams.
    """

    def __init__(self, position: FilePosition, reader: StreamReader):
        self.position = position
        self.reader = reader
