"""Prometheus metrics of the parent server at ``http://ADDR:PORT/metrics`` (``--metrics-port``).

prometheus-client writes the exposition (a collector builds the metrics from
the parent's status at each scrape); the HTTP side is a few lines of
non-blocking socket code inside the parent's own ``selectors`` wait, not
prometheus-client's server thread: a thread in a process that forks could hold
a lock (logging's, the registry's) at the moment of a fork and leave the child
stuck on it. A scrape that does not send its request within
``REQUEST_SECONDS``, or sends more than ``MAX_REQUEST`` bytes, is closed.
"""

from __future__ import annotations

import http
import logging
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import logsetup
from .doorway import close_after_writing, unregister

log = logging.getLogger("dds.metrics")

#: seconds a scrape has to send its request line and headers
REQUEST_SECONDS = 5.0
#: bytes of request taken at most
MAX_REQUEST = 8192
#: scrapes served at once; beyond, the oldest is closed
MAX_SCRAPES = 16


def _import_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise RuntimeError("--metrics-port needs prometheus-client: pip install prometheus-client") from None
    return prometheus_client


class StatusCollector:
    """Builds the metrics from ``status()`` (the same dict ``ddscomm --status --json`` shows)."""

    def __init__(self, status: Callable[[], dict]):
        self.status = status

    def describe(self) -> list:
        return []  # no fixed set: streams and clients come and go

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.status()
        server, clients = st["server"], st["clients"]
        yield GaugeMetricFamily("dds_clients", "clients connected now", value=server["clients"])
        yield GaugeMetricFamily("dds_max_clients", "most clients served at once (-m)", value=server["max_clients"])
        yield GaugeMetricFamily("dds_uptime_seconds", "seconds since the server started", value=server["uptime"])
        records = CounterMetricFamily("dds_records_sent", "records sent to clients, per stream", labels=["stream"])
        for stream, n in sorted(server["records_sent"].items()):
            records.add_metric([stream], n)
        yield records
        yield CounterMetricFamily("dds_bytes_sent", "bytes sent to clients (whole frames)", value=server["bytes_sent"])
        data_bytes = CounterMetricFamily("dds_record_bytes_sent", "record data bytes sent to clients, per stream",
                                         labels=["stream"])
        for stream, n in sorted(server["record_bytes_sent"].items()):
            data_bytes.add_metric([stream], n)
        yield data_bytes
        refused = CounterMetricFamily("dds_connections_refused", "connections refused, by cause", labels=["cause"])
        for cause, n in sorted(server["refused"].items()):
            refused.add_metric([cause], n)
        yield refused
        exits = CounterMetricFamily("dds_child_exits", "children that ended, by cause", labels=["cause"])
        for cause, n in sorted(server["child_exits"].items()):
            exits.add_metric([cause], n)
        yield exits
        yield GaugeMetricFamily("dds_files", "data files in the data directory now", value=server["files"])
        yield CounterMetricFamily("dds_files_seen", "distinct data files seen since the start",
                                  value=server["files_seen"])
        lag = GaugeMetricFamily("dds_client_lag_records", "records written after the last one sent to a client",
                                labels=["pid", "address", "stream"])
        lag_s = GaugeMetricFamily("dds_client_lag_seconds", "how far behind the data a client is, in seconds",
                                  labels=["pid", "address"])
        sent = CounterMetricFamily("dds_client_records_sent", "records sent to a client, per stream",
                                   labels=["pid", "address", "stream"])
        for c in clients:
            who = [str(c["pid"]), c["address"]]
            for stream, n in sorted(c["lag"].items()):
                lag.add_metric([*who, stream], n)
            if c["lag_seconds"] is not None:
                lag_s.add_metric(who, c["lag_seconds"])
            for stream, n in sorted(c["records_sent"].items()):
                sent.add_metric([*who, stream], n)
        yield lag
        yield lag_s
        yield sent
        members = GaugeMetricFamily("dds_group_members", "members of a group now", labels=["group"])
        flight = GaugeMetricFamily("dds_group_in_flight_records", "records sent to a group's members and not yet "
                                   "acknowledged", labels=["group"])
        handed = CounterMetricFamily("dds_group_records_handed", "records handed to a group's members",
                                     labels=["group"])
        again = CounterMetricFamily("dds_group_records_redelivered", "records handed again after a member ended "
                                    "without acknowledging them", labels=["group"])
        for g in st.get("groups", ()):
            members.add_metric([g["name"]], len(g["members"]))
            flight.add_metric([g["name"]], g["in_flight"])
            handed.add_metric([g["name"]], g["records_handed"])
            again.add_metric([g["name"]], g["records_redelivered"])
        yield members
        yield flight
        yield handed
        yield again


class Scrape:
    """One HTTP connection to the metrics port."""

    __slots__ = ("sock", "deadline", "inbox", "outbox")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline
        self.inbox = b""
        self.outbox = b""


class MetricsServer:
    """The metrics endpoint, driven by the parent's selector.

    Args:
        bind (str): address to listen on.
        port (int): port; 0 picks a free one.
        sel (selectors.BaseSelector): the parent's selector (data: this server, or a :class:`Scrape`).
        status (callable): the parent's status dict.
    """

    def __init__(self, bind: str, port: int, sel: selectors.BaseSelector, status: Callable[[], dict]):
        prom = _import_prometheus()
        self.registry = prom.CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(status))
        self._generate = prom.generate_latest
        self.content_type = prom.CONTENT_TYPE_LATEST
        self.sel = sel
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((bind, port))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()[:2]
        self.scrapes: dict[socket.socket, Scrape] = {}
        sel.register(self.listener, selectors.EVENT_READ, self)

    def owns(self, data: Any) -> bool:
        return data is self or isinstance(data, Scrape)

    def ready(self, data: Any) -> None:
        if data is self:
            self._accept()
        elif isinstance(data, Scrape):
            self._serve(data)

    def _accept(self) -> None:
        for _ in range(MAX_SCRAPES):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            if len(self.scrapes) >= MAX_SCRAPES:
                self._drop(min(self.scrapes.values(), key=lambda s: s.deadline))
            scrape = Scrape(sock, time.monotonic() + REQUEST_SECONDS)
            self.scrapes[sock] = scrape
            self.sel.register(sock, selectors.EVENT_READ, scrape)

    def _serve(self, s: Scrape) -> None:
        if s.outbox:
            self._flush(s)
            return
        try:
            data = s.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(s)
            return
        s.inbox += data
        if b"\r\n\r\n" not in s.inbox and b"\n\n" not in s.inbox:
            if len(s.inbox) > MAX_REQUEST:
                self._drop(s)
            return
        line = s.inbox.split(b"\n", 1)[0].decode("latin-1").split()
        if len(line) >= 2 and line[0] in ("GET", "HEAD") and line[1].split("?", 1)[0] == "/metrics":
            try:
                body = self._generate(self.registry)
            except Exception as exc:  # a bug costs this scrape, not the parent
                logsetup.bug(log, "metrics scrape failed")
                s.outbox = _response(500, "text/plain", f"metrics failed: {exc}\n".encode())
            else:
                s.outbox = _response(200, self.content_type, body if line[0] == "GET" else b"", len(body))
        else:
            s.outbox = _response(404, "text/plain", b"only /metrics here\n")
        self._flush(s)

    def _flush(self, s: Scrape) -> None:
        try:
            n = s.sock.send(s.outbox)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._drop(s)
            return
        s.outbox = s.outbox[n:]
        if s.outbox:
            self.sel.modify(s.sock, selectors.EVENT_WRITE, s)
        else:
            self._drop(s)

    def expire(self, now: float) -> None:
        for s in [s for s in self.scrapes.values() if s.deadline <= now]:
            self._drop(s)

    def next_deadline(self) -> float | None:
        return min((s.deadline for s in self.scrapes.values()), default=None)

    def _drop(self, s: Scrape) -> None:
        self.scrapes.pop(s.sock, None)
        unregister(self.sel, s.sock)
        close_after_writing(s.sock)

    def close(self) -> None:
        for s in list(self.scrapes.values()):
            self._drop(s)
        unregister(self.sel, self.listener)
        self.listener.close()

    def close_in_child(self) -> None:
        """In a new child: these sockets are the parent's."""
        for sock in self.scrapes:
            sock.close()
        self.scrapes.clear()
        self.listener.close()


def _response(code: int, content_type: str, body: bytes, length: int | None = None) -> bytes:
    head = (f"HTTP/1.0 {code} {http.HTTPStatus(code).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n")
    return head.encode() + body
