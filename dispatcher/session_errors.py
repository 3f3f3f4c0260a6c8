"""How a session request ends when it does not answer with data.

:class:`SessionError` refuses one request (the reply is an error and the session
goes on); :class:`SessionAbort` ends the session (raised by the waiter when the
client left, the server stops or the parent died).
"""

from __future__ import annotations

from .protocol import MessageType


class SessionError(Exception):
    """A request failed; the session goes on.

    Args:
        message_type (MessageType): the error code the client gets.
        message (str): what was wrong.
    """

    def __init__(self, message_type: MessageType, message: str):
        super().__init__(message)
        self.message_type = message_type


class SessionAbort(Exception):
    """The session must end now (client gone, server stopping, parent dead)."""
