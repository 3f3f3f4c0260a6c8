"""``ddscomm --status`` as text: the server in three lines, a table with a row per client, then the groups."""

from __future__ import annotations

from typing import Any

COLUMNS = ("ADDRESS", "PID", "FOR", "STREAMS", "MODE", "SELECTION", "FILE", "ENTRY", "LAG", "LAG S",
           "RECORDS", "BYTES", "REC/S", "STATE")


def duration(seconds: float | None) -> str:
    """``4.2s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: float) -> str:
    """``512 B``, ``1.2 kB``, ``3.4 MB``, ``5.6 GB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _per_stream(values: dict, streams: list) -> str:
    if not values:
        return "-"
    if len(values) == 1 and len(streams) <= 1:
        return str(next(iter(values.values())))
    return " ".join(f"{s}={values[s]}" for s in values)


def _selection(sel: Any) -> str:
    if sel is None:
        return "-"
    if isinstance(sel, dict):
        return "; ".join(f"{k}: {v}" for k, v in sel.items())
    return str(sel)


def client_row(c: dict) -> list[str]:
    streams = c.get("streams") or []
    lag_s = c.get("lag_seconds")
    return [
        c["address"], str(c["pid"]), duration(c.get("connected_for")), ",".join(streams) or "-",
        (c.get("keep_up") or "-") + (f" group {c['group']}" if c.get("group") else ""),
        _selection(c.get("selection")), c.get("file") or "-",
        _per_stream(c.get("entries") or {}, streams), _per_stream(c.get("lag") or {}, streams),
        "-" if lag_s is None else f"{lag_s:.2f}", str(sum((c.get("records_sent") or {}).values())),
        size(c.get("bytes_sent") or 0), f"{c.get('rate', 0.0):.1f}", c.get("state") or "-",
    ]


def render(status: dict, where: str) -> str:
    """The whole screen for a status dict (see docs/STATUS.md); ``where`` is ``HOST:PORT``."""
    srv, clients = status["server"], status["clients"]
    refused = ", ".join(f"{k} {v}" for k, v in srv["refused"].items())
    records = sum(srv["records_sent"].values())
    lines = [
        f"{srv['identity']} at {where}: up {duration(srv['uptime'])}, {srv['state']}",
        f"data {srv['data_dir']}: {srv['files']} files, open file {srv['open_file'] or '-'}",
        f"clients {srv['clients']} of {srv['max_clients']}; refused: {refused}; "
        f"sent {records} records, {size(srv['bytes_sent'])}",
        "",
    ]
    rows = [list(COLUMNS)] + [client_row(c) for c in clients]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    numeric = {"PID", "ENTRY", "LAG", "LAG S", "RECORDS", "BYTES", "REC/S"}
    for r in rows:
        cells = [v.rjust(w) if COLUMNS[i] in numeric else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    if not clients:
        lines.append("(no clients)")
    for g in status.get("groups") or ():
        lines.append("")
        lines.append(group_text(g))
    return "\n".join(lines)


def group_text(g: dict) -> str:
    """A group in two lines and a line per member: place, in-flight and redelivered counts."""
    streams = g.get("streams") or []
    linger = g.get("lingering_for")
    head = (f"group {g['name']} ({g['distribution']}, restore {g['restore']}): {len(g['members'])} members"
            + (f", no member: keeps its place {duration(linger)} more" if linger is not None else ""))
    place = (f"  at {g.get('file') or '(no file yet)'} {_per_stream(g.get('entries') or {}, streams)}; "
             f"in flight {g['in_flight']} records in {g['in_flight_ranges']} ranges; waiting to go again "
             f"{g['returned_ranges']} ranges; handed {g['records_handed']}, redelivered "
             f"{g['records_redelivered']}, dropped {g['records_dropped']}")
    members = [f"  member {m['address']} (pid {m['pid']}): in flight {m['in_flight']}, handed {m['records']}"
               for m in g["members"]]
    return "\n".join([head, place, *members])
