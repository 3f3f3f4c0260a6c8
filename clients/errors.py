"""Exceptions of the client SDK; each carries the server's ``MessageType``."""

from __future__ import annotations

from dispatcher.protocol import MessageType


class DDSError(Exception):
    """A request failed. ``.message_type`` says how (a :class:`MessageType`)."""

    def __init__(self, message: str, message_type: MessageType = MessageType.SERVER_ERROR):
        super().__init__(message)
        self.message_type = message_type


class DDSConnectionError(DDSError, ConnectionError):
    """No server, or the connection to it was lost."""

    def __init__(self, message: str, message_type: MessageType = MessageType.SERVER_ERROR):
        super().__init__(message, message_type)


class DDSTimeout(DDSError, TimeoutError):
    """Nothing satisfying the subscription arrived within the timeout; the session stays usable."""

    def __init__(self, message: str, message_type: MessageType = MessageType.TIMEOUT):
        super().__init__(message, message_type)
