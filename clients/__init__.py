"""DDS client SDK: receive live DAQ data from a ddsparentserver.

- ``client``: :class:`DDSClient` (subscribe, next, next_batch, go_to_file, go_to_next_file).
- ``records``: :class:`RecordSet` and :class:`RecordBatch`, what the client returns.
- ``errors``: :class:`DDSError`, :class:`DDSConnectionError`, :class:`DDSTimeout`.
- ``iterate``: :func:`iterate`, the live counterpart of ``uproot.iterate``.
- ``failover``: server lists, and the position a resuming client continues from.
- ``job``: MINOS-style analysis jobs with an input module and module paths.

``Subscription``, ``KeepUp`` and ``MessageType`` are shared with the server: the SDK
imports only the server's wire layer (``dispatcher.protocol``, ``layouts``,
``columnar``, ``compression``, ``subscription``, ``transport``, ``tlsstream``, ``suggest``).
"""

from dispatcher.protocol import MessageType
from dispatcher.subscription import KeepUp, Subscription

from .client import DDSClient
from .errors import DDSConnectionError, DDSError, DDSTimeout
from .iterate import iterate  # eager: importing the submodule would otherwise shadow the function
from .records import RecordBatch, RecordSet

__all__ = [
    "DDSClient",
    "DDSConnectionError",
    "DDSError",
    "DDSTimeout",
    "KeepUp",
    "MessageType",
    "RecordBatch",
    "RecordSet",
    "Subscription",
    "iterate",
]
