"""A group member as its own process, for tests: drains a group and writes what it got, one JSON line per batch.

    python tests/group_member.py PORT OUT GROUP [--pause-after N --pause S] [--batch N] [--idle S] [options]

Each line is ``{"file", "entries", "redelivered"}``, written and flushed before the member asks for more
(so a member killed in its pause has written everything it was handed). It ends after ``--idle``
seconds with nothing new, or after ``--limit`` seconds in all, closing cleanly.
"""

from __future__ import annotations

import argparse
import json
import time

from clients import DDSClient, DDSTimeout, Subscription


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("group")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--pause-after", type=int, default=-1, help="after this many batches, pause")
    ap.add_argument("--pause", type=float, default=0.0)
    ap.add_argument("--each", type=float, default=0.0, help="seconds of work per batch")
    ap.add_argument("--idle", type=float, default=1.5)
    ap.add_argument("--limit", type=float, default=60.0)
    ap.add_argument("--selection", default=None)
    ap.add_argument("--start", default="oldest")
    ap.add_argument("--restore", default="redeliver")
    ap.add_argument("--distribution", default="balanced")
    args = ap.parse_args()
    sub = Subscription(streams=["DaqSnarl"], group=args.group, start=args.start, selection=args.selection,
                       restore=args.restore, distribution=args.distribution)
    end = time.monotonic() + args.limit
    with DDSClient("127.0.0.1", args.port) as dds, open(args.out, "w") as out:
        dds.subscribe(sub)
        out.write(json.dumps({"ready": True}) + "\n")
        out.flush()
        n = 0
        while time.monotonic() < end:
            try:
                b = dds.next_batch(args.batch, timeout=args.idle)
            except DDSTimeout:
                break
            out.write(json.dumps({"file": b.file, "entries": [int(e) for e in b.entries],
                                  "redelivered": b.redelivered}) + "\n")
            out.flush()
            n += 1
            if n == args.pause_after:
                time.sleep(args.pause)
            if args.each:
                time.sleep(args.each)


if __name__ == "__main__":
    main()
