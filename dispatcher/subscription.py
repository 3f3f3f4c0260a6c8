"""What a client asks for: streams, keep-up mode, selection, branches, start, prescale, sync.

Shared by both sides: the client builds a :class:`Subscription` and sends
``to_dict()``; the server rebuilds it with :func:`from_dict`, which checks every
field of what arrived (it came from the network) and raises
:class:`SubscriptionError` with a message naming the problem.
"""

from __future__ import annotations

import enum
import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_STREAMS = 64
MAX_NAME = 256
DISTRIBUTIONS = ("balanced", "roundrobin")
RESTORES = ("redeliver", "drop")


class SubscriptionError(ValueError):
    """The subscription is malformed; the message says which field and why."""


class KeepUp(str, enum.Enum):
    """How a client keeps up with the DAQ.

    ALL: every record, never skipping. FILE: every record of a file, then jump to
    the newest file. RECORD: always the newest record.
    """

    ALL = "all"
    FILE = "file"
    RECORD = "record"

    @classmethod
    def parse(cls, value) -> KeepUp:
        if isinstance(value, KeepUp):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            key = {"filekeepup": "file", "recordkeepup": "record"}.get(key, key)
            for mode in cls:
                if mode.value == key:
                    return mode
        raise SubscriptionError(
            f"keep_up must be one of 'all', 'file', 'record' (or All, FileKeepUp, RecordKeepUp), not {quote(value)}"
        )


_quoting = reprlib.Repr()
_quoting.maxstring = 80


def quote(value: object) -> str:
    """A value a peer sent, cut short for messages (they go to logs and back to the peer)."""
    return _quoting.repr(value)


def _name(value, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME or "\x00" in value:
        raise SubscriptionError(
            f"{what} must be a non-empty name of at most {MAX_NAME} characters, not {quote(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no file, tree or branch is named so
        raise SubscriptionError(f"{what} {quote(value)} is not valid Unicode") from None
    return value


@dataclass(frozen=True)
class Subscription:
    """A client's subscription.

    Args:
        streams (tuple of str): tree names; an unknown one may appear in a later file; default ``("DaqSnarl",)``.
        keep_up (str or KeepUp): ``"all"``, ``"file"`` or ``"record"``; default ``"file"``.
        selection (None, str or dict): one expression for every stream, or ``{stream: expression}``.
        branches (None or dict): ``{stream: [names]}``: only these are sent; default all.
        start (str): ``"current"``, ``"oldest"``, ``"latest"`` or a file name; default ``"current"``.
        prescale (int): deliver the 1st, (n+1)th, ... passing record per stream; default 1.
            Not applied in ``record`` mode, which skips anyway.
        sync (None or str): branch to build record sets across streams on; default None.
            Not applied in ``record`` mode (the newest record of each stream in turn).
        max_sync_delay (float): seconds to wait for a missing stream on the open file; default 2.0.
        group (None or str): share the records with every client subscribed with this group name
            (same streams, selection and prescale): each passing record goes to one live member;
            default None. Group subscriptions use ``keep_up="all"`` (the default with a group).
        distribution (str): ``"balanced"`` (whoever asks next gets the next records) or
            ``"roundrobin"`` (members in turn); default ``"balanced"``.
        restore (str): what becomes of the records a member was handed and had not acknowledged
            when its session ended otherwise than by ``close()``: ``"redeliver"`` (to another member,
            marked ``redelivered``; at least once) or ``"drop"`` (at most once); default ``"redeliver"``.
    """

    streams: tuple = ("DaqSnarl",)
    keep_up: KeepUp = None  # type: ignore[assignment]  # None: "file", or "all" with a group
    selection: str | Mapping[str, str] | None = None
    branches: Mapping[str, Sequence[str]] | None = None
    start: str = "current"
    prescale: int = 1
    sync: str | None = None
    max_sync_delay: float = 2.0
    group: str | None = None
    distribution: str = "balanced"
    restore: str = "redeliver"

    def __post_init__(self):
        streams = (self.streams,) if isinstance(self.streams, str) else self.streams
        if not isinstance(streams, (list, tuple)) or not streams or len(streams) > MAX_STREAMS:
            raise SubscriptionError(f"streams must be 1 to {MAX_STREAMS} tree names, not {quote(self.streams)}")
        streams = tuple(_name(s, "a stream") for s in streams)
        if len(set(streams)) != len(streams):
            raise SubscriptionError(f"streams are repeated: {quote(list(streams))}")
        object.__setattr__(self, "streams", streams)
        if self.group is not None:
            _name(self.group, "group")
        if self.keep_up is None:
            object.__setattr__(self, "keep_up", KeepUp.ALL if self.group is not None else KeepUp.FILE)
        object.__setattr__(self, "keep_up", KeepUp.parse(self.keep_up))

        sel = self.selection
        if isinstance(sel, Mapping):
            for k, text in sel.items():
                if k not in streams:
                    raise SubscriptionError(f"selection names stream {quote(k)}, which is not subscribed "
                                            f"({', '.join(streams)})")
                if not isinstance(text, str):
                    raise SubscriptionError(f"selection for stream {k!r} must be a string, not {type(text).__name__}")
            object.__setattr__(self, "selection", dict(sel))
        elif sel is not None and not isinstance(sel, str):
            raise SubscriptionError("selection must be None, a string or a dict {stream: expression}, "
                                    f"not {type(sel).__name__}")

        br = self.branches
        if br is not None:
            if not isinstance(br, Mapping):
                raise SubscriptionError("branches must be None or a dict {stream: [branch names]}")
            clean: dict[str, tuple[str, ...]] = {}
            for k, v in br.items():
                if k not in streams:
                    raise SubscriptionError(f"branches names stream {quote(k)}, which is not subscribed "
                                            f"({', '.join(streams)})")
                if isinstance(v, str) or not isinstance(v, (list, tuple)):
                    raise SubscriptionError(f"branches for stream {k!r} must be a list of names")
                clean[k] = tuple(_name(b, "a branch") for b in v)
            object.__setattr__(self, "branches", clean)

        _name(self.start, "start")
        if isinstance(self.prescale, bool) or not isinstance(self.prescale, int) or not 1 <= self.prescale <= 2**31:
            raise SubscriptionError(f"prescale must be a positive integer, not {quote(self.prescale)}")
        if self.sync is not None:
            _name(self.sync, "sync")
        d = self.max_sync_delay
        # range first: math.isfinite(10**400) raises OverflowError
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 3600 or not math.isfinite(d):
            raise SubscriptionError(f"max_sync_delay must be between 0 and 3600 seconds, not {quote(d)}")
        object.__setattr__(self, "max_sync_delay", float(d))
        if self.distribution not in DISTRIBUTIONS:
            raise SubscriptionError(f"distribution must be one of {', '.join(map(repr, DISTRIBUTIONS))}, "
                                    f"not {quote(self.distribution)}")
        if self.restore not in RESTORES:
            raise SubscriptionError(f"restore must be one of {', '.join(map(repr, RESTORES))}, "
                                    f"not {quote(self.restore)}")
        if self.group is not None:
            if self.keep_up is not KeepUp.ALL:
                raise SubscriptionError(f"a group subscription uses keep_up='all' (every record goes to one "
                                        f"member), not {self.keep_up.value!r}")
            if self.sync is not None:
                raise SubscriptionError("sync cannot be used with a group: members share single records")

    def selection_for(self, stream: str) -> str | None:
        if isinstance(self.selection, Mapping):
            return self.selection.get(stream)
        return self.selection

    def branches_for(self, stream: str) -> Sequence[str] | None:
        """The branch names to send for ``stream``, or None for all."""
        if self.branches is None:
            return None
        return self.branches.get(stream)

    def to_dict(self) -> dict:
        return {
            "streams": list(self.streams),
            "keep_up": self.keep_up.value,
            "selection": self.selection,
            "branches": None if self.branches is None else {k: list(v) for k, v in self.branches.items()},
            "start": self.start,
            "prescale": self.prescale,
            "sync": self.sync,
            "max_sync_delay": self.max_sync_delay,
            **({"group": self.group, "distribution": self.distribution, "restore": self.restore}
               if self.group is not None else {}),
        }


_FIELDS = ("streams", "keep_up", "selection", "branches", "start", "prescale", "sync", "max_sync_delay", "group",
           "distribution", "restore")


def from_dict(data) -> Subscription:
    """Rebuild and check a subscription that arrived from the network."""
    if not isinstance(data, dict):
        raise SubscriptionError("subscription must be a JSON object")
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise SubscriptionError(f"unknown subscription fields: {quote(sorted(unknown))}")
    try:
        return Subscription(**data)
    except TypeError as exc:  # e.g. unhashable values
        raise SubscriptionError(str(exc)) from None
