"""The client's half of streamed batches: ``next_batch`` reads replies the server sent ahead.

The first ``next_batch`` starts a stream (``StreamBatches``); each later one with
the same arguments takes the next reply off the socket and returns a ``Credit``
before decoding it, so the server reads the next batch while this one is decoded.
Anything else the client does first ends the stream (``EndStream`` with the
number of replies consumed; the server serves the others again and the replies
still on the way are dropped).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dispatcher.protocol import Credit, Data, EndStream, Error, MessageType, Ok, StreamBatches

from .errors import DDSError

if TYPE_CHECKING:
    from .client import DDSClient

#: a TIMEOUT that ends a stream this much before the caller's own timeout was timed from an earlier
#: moment (the server counts from the client's last message): the stream starts again for the rest
EARLY = 0.02

#: error replies after which the server has closed the session
SESSION_ENDING = (MessageType.SHUTDOWN, MessageType.PROTOCOL_ERROR, MessageType.SERVER_BUSY, MessageType.FORBIDDEN)


class BatchStream:
    """A stream of batches of one ``DDSClient``.

    Args:
        client (DDSClient): the session it runs in.
        max_records (int), timeout (float): the ``next_batch`` arguments it serves.
        window (int): most replies the server sends ahead.
    """

    def __init__(self, client: DDSClient, max_records: int, timeout: float, window: int, sets: int = 0):
        self.client = client
        self.params = (max_records, timeout, sets)
        self.window = window
        self.sets = sets  # > 0: replies of single-record sets for next(), consumed when all are handed out
        self.running = False
        self.consumed = 0

    def next(self, reply_margin: float, timeout: float | None = None) -> Data:
        """The next batch reply; DDSTimeout when nothing came within the timeout (the stream's own,
        or ``timeout`` when given: what is left of the caller's)."""
        max_records, asked, sets = self.params
        if timeout is None:
            timeout = asked
        t0 = time.monotonic()
        while True:
            left = timeout - (time.monotonic() - t0)
            if not self.running:
                self.client._send(StreamBatches(max_records, max(0.0, left), self.window, sets))
                self.running, self.consumed = True, 0
            reply = self.client._receive(max(0.0, left) + reply_margin)
            if isinstance(reply, Data):
                if not sets:
                    self.used_one()  # before decoding: the server reads on meanwhile
                return reply
            if isinstance(reply, Error):
                self.running = False
                if reply.message_type is MessageType.TIMEOUT and timeout - (time.monotonic() - t0) > EARLY:
                    continue
                self.client._raise_for(reply)
            raise DDSError(f"expected record data from {self.client.address}, got {reply.TYPE!r}",
                           MessageType.PROTOCOL_ERROR)

    def used_one(self) -> None:
        """One more reply consumed: the server may send another."""
        self.consumed += 1
        if self.running:
            self.client._send(Credit(1))

    def end(self, partial: dict[str, int] | None = None) -> None:
        """End the stream: the server serves again what was sent and not consumed (of the reply in use,
        all but ``partial[stream]`` records of each stream)."""
        if not self.running:
            return
        self.running = False
        self.client._send(EndStream(self.consumed, dict(partial or {})))
        while True:
            reply = self.client._receive(60.0)
            if isinstance(reply, Ok):
                return
            if isinstance(reply, Error) and reply.message_type in SESSION_ENDING:
                self.client._raise_for(reply)
            # data still on the way, or the error that had ended the stream: served again, or moot
