"""The monitor's DDS sessions: one per (stream, cut) of the config, each in a thread.

A feed subscribes to its stream with the cut as the server-side selection,
only the branches its histograms read, and the config's keep-up mode (``file``
by default, as monitoring wants), then fills its histograms from every batch.
A lost server is retried every :data:`RETRY_SECONDS`; a subscription the server
refuses (a bad cut, an unknown branch) stops the feed with an error that names
the config file, line and key.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from clients import DDSClient, DDSConnectionError, DDSError, DDSTimeout, KeepUp, MessageType, Subscription

from .config import HistogramSpec, MonitorConfig
from .filling import HistogramFiller
from .quantity import QuantityError

__all__ = ["Feed", "feeds_for"]

log = logging.getLogger("ddsmonitor")

RETRY_SECONDS = 2.0
#: a batch waits at most this long, so a stop is noticed soon
WAIT_SECONDS = 0.5
MAX_RECORDS = 5000
_UNKNOWN_BRANCH = re.compile(r"unknown branch '([^']+)'")


class Feed(threading.Thread):
    """One DDS session filling the histograms of one (stream, cut).

    Args:
        config (MonitorConfig): for the keep-up mode and messages.
        specs (list[HistogramSpec]): histograms sharing the stream and cut.
        fillers (dict[str, HistogramFiller]): the fillers, by histogram name.
        touched (Callable[[str], None]): called with a histogram's name after it was filled.
        host (str), port (int): the ddsparentserver.
        token (str): the server's client token, if it needs one; default none.
    """

    def __init__(self, config: MonitorConfig, specs: list[HistogramSpec], fillers: dict[str, HistogramFiller],
                 touched: Callable[[str], None], host: str, port: int, token: str = ""):
        super().__init__(name=f"feed-{specs[0].stream}", daemon=True)
        self.config = config
        self.specs = specs
        self.fillers = fillers
        self.touched = touched
        self.host, self.port, self.token = host, port, token
        self.stream = specs[0].stream
        self.cut = specs[0].cut
        self.stop_event = threading.Event()
        self.subscribed = threading.Event()  # set after the first subscribe answer, good or bad
        self.error: str | None = None  # a refusal that stops the feed
        self.state = "starting"
        self.file = ""
        self.records = 0
        self.last_batch = 0.0
        self.failed: dict[str, str] = {}  # histogram -> why it cannot be filled

    def status(self) -> dict:
        """What the status tab shows for this session."""
        return {"stream": self.stream, "cut": self.cut or "", "server": f"{self.host}:{self.port}",
                "keep_up": self.config.keep_up, "state": self.state, "file": self.file, "records": self.records,
                "last_batch": self.last_batch, "histograms": [s.name for s in self.specs],
                "error": self.error or "", "failed": dict(self.failed)}

    def stop(self) -> None:
        self.stop_event.set()

    def subscription(self) -> Subscription:
        branches = sorted({b for spec in self.specs for b in spec.branches})
        return Subscription(streams=(self.stream,), keep_up=KeepUp.parse(self.config.keep_up), selection=self.cut,
                            branches={self.stream: branches})

    def run(self) -> None:
        warned = False
        while not self.stop_event.is_set():
            try:
                with DDSClient(self.host, self.port, connect_timeout=5.0, token=self.token) as dds:
                    warned = False
                    try:
                        dds.subscribe(self.subscription())
                    except DDSError as exc:
                        if exc.message_type in (MessageType.BAD_SELECTION, MessageType.BAD_SUBSCRIPTION):
                            self.error = self.explain(exc)
                            self.state = "refused"
                            if self.subscribed.is_set():  # at start, ddsmonitor itself says it and exits
                                log.error("%s", self.error)
                            return
                        raise
                    finally:
                        self.subscribed.set()
                    self.state = "receiving"
                    self.receive(dds)
            except DDSConnectionError as exc:
                self.state = "no server"
                if not warned:
                    log.warning("stream %s: %s; retrying every %g s", self.stream, exc, RETRY_SECONDS)
                    warned = True
            except DDSError as exc:
                self.state = f"error: {exc}"
                log.warning("stream %s: %s; reconnecting in %g s", self.stream, exc, RETRY_SECONDS)
            self.stop_event.wait(RETRY_SECONDS)
        self.state = "stopped"

    def receive(self, dds: DDSClient) -> None:
        while not self.stop_event.is_set():
            try:
                batch = dds.next_batch(max_records=MAX_RECORDS, timeout=WAIT_SECONDS)
            except DDSTimeout:
                continue
            if batch.stream != self.stream or not len(batch):
                continue
            self.file = batch.file
            self.records += len(batch)
            self.last_batch = time.time()
            for spec in self.specs:
                if spec.name in self.failed:
                    continue
                try:
                    self.fillers[spec.name].fill(batch.arrays, batch.file)
                except QuantityError as exc:
                    self.failed[spec.name] = str(exc)
                    log.error("histogram %r (%s, line %d) is not filled: %s", spec.name, self.config.path,
                              spec.line, exc)
                    continue
                self.touched(spec.name)

    def explain(self, exc: DDSError) -> str:
        """The server's refusal, pointed at the config key that caused it."""
        message = str(exc).splitlines()[0]
        if exc.message_type is MessageType.BAD_SELECTION:
            spec = self.specs[0]
            return f"{self.config.path}, line {spec.line_of('cut')}: histogram {spec.name!r}, key 'cut': {message}"
        found = _UNKNOWN_BRANCH.search(message)
        for spec in self.specs:
            for key, quantity in (("x", spec.x), ("y", spec.y), ("time", spec.time)):
                if found and quantity is not None and found.group(1) in quantity.branches:
                    return (f"{self.config.path}, line {spec.line_of(key)}: histogram {spec.name!r}, key {key!r}: "
                            f"{message}")
        return f"{self.config.path}: stream {self.stream}: {message}"


def feeds_for(config: MonitorConfig, fillers: dict[str, HistogramFiller], touched: Callable[[str], None],
              host: str, port: int, token: str = "") -> list[Feed]:
    """One feed per (stream, cut) of the config, not started.

    Args:
        config (MonitorConfig): the histograms.
        fillers (dict[str, HistogramFiller]): a filler per histogram.
        touched (Callable[[str], None]): called after a histogram was filled.
        host (str), port (int): the ddsparentserver.
        token (str): its client token, if any.
    """
    groups: dict[tuple[str, str | None], list[HistogramSpec]] = {}
    for spec in config.histograms.values():
        groups.setdefault((spec.stream, spec.cut), []).append(spec)
    return [Feed(config, specs, fillers, touched, host, port, token) for specs in groups.values()]
