"""The optimisations the benchmarks led to, with the figures before and after.

This part of docs/PERFORMANCE.md is history, not a measurement of the run that
wrote the file: each before/after pair was measured in one session on the same
machine, the ratios against baselines of their own runs. Change it when an
optimisation is added, with the command that measured it.
"""

TEXT = r"""
## Optimisations

Profiling (pyinstrument on a forked child running the real `run_child` loop, cProfile on the client,
strace on the parent and its children) found the hot spots below. "Before" is the same bench code run
against a copy of the tree with these changes reverted, "after" the tree with them, one run right
after the other on 2026-11-21 (`python -m bench.run`, full sizes, load average 0.4 rising to 3.7 from
other work on the machine).

| scenario | before | after |
|---|---|---|
| 1. all records, next_batch(10000) vs uproot.iterate | 4.32 M/s vs 7.65 M/s: ratio 0.56 | 6.38 M/s vs 8.10 M/s: ratio 0.79 |
| 2. selective cut (2%) vs uproot.iterate + cut | 6.02 M/s vs 4.61 M/s: ratio 1.30 | 7.37 M/s vs 4.70 M/s: ratio 1.57 |
| 3. next(), prefetch 256 | 204.8 k/s | 234.9 k/s |
| 5. fan-out, 8 clients, aggregate vs 8 local readers | 8.07 M/s vs 14.16 M/s: ratio 0.57 | 8.57 M/s vs 12.82 M/s: ratio 0.67 |
| 5. fan-out, 32 clients, aggregate vs 32 local readers | 4.50 M/s vs 13.60 M/s: ratio 0.33 | 8.23 M/s vs 13.11 M/s: ratio 0.63 |
| 6. connection, DAQ file, start="current": connect / subscribe / first next() (p50) * | 10.3 / 13.9 / 88.5 ms | 5.5 / 10.7 / 18.1 ms |
| 6. connection total, p50 / p99 * | 112.6 / 147.7 ms | 34.3 / 54.6 ms |
| 7. child peak RSS serving a 95 MB / a 969 MB file | 158 MB / 195 MB (ratio 1.24) | 106 MB / 106 MB (ratio 1.00) |

\* Scenario 6 as it is now (its own directory, start="current"), measured with `python -m bench.run
--only 6`, before and after alternating twice; the second round gave 108.1 / 129.8 ms before and
34.0 / 52.0 ms after.

What changed, each measured on its own as well:

1. **No uproot array cache in the child** (`dispatcher/tail.py`, `uproot.open(..., array_cache=None)`).
   uproot keeps up to 100 MB of every array it read, per open file; a session reads each range once,
   so the cache only made every child grow towards +100 MB on big files. Child peak RSS above.
2. **numpy.ma loaded before the fork** (`dispatcher/tail.py`). awkward imports it on the first read,
   so every child paid the import on its first record: 21 ms on a quiet machine, 47 ms under load
   (pyinstrument).
3. **Read to the end of the basket** (`dispatcher/reader.py`, `_chunk_stop`). A read that ends inside a
   basket decompresses the whole basket anyway; the growing first chunks (2,000, 4,000, ... entries)
   decompressed the first 100,000-entry basket five times. Now a chunk extends to the basket boundary
   (up to 4 x 50,000 entries): one decompression per basket. With item 5, the child's CPU to serve the
   2 M records of scenario 1 (four runs each, back to back): 0.36-0.38 s before, 0.23-0.27 s after;
   uproot.iterate over the same file uses 0.26-0.27 s.
4. **First chunk of 256 entries** (`dispatcher/reader.py`, `FIRST_CHUNK`, was 2,000). A DAQ file has one
   small basket per append (~10 records), and uproot spends ~40-50 us per basket, so the first read
   touched ~200 baskets per branch. First next() in a fresh child on a demo.daqsim file (median of 7):
   78.5 ms before, 26.2 ms after; first next_batch(): 83.4 ms before, 61.5 ms after.
5. **Skip `ak.to_packed` for flat records** (`dispatcher/columnar.py`). Sliced flat columns are packed
   already; to_packed cost 0.25 ms of awkward dispatch per reply. encode_parts for a 10,000-record
   batch: 0.41 ms before, 0.05 ms after.
6. **The parent imports the child's code before forking** (`dispatcher/cli.py`: `dispatcher.child`,
   `setproctitle`). strace showed every child compiling child.py and transport.py and importing
   setproctitle after the fork. Connect (fork + greeting), p50 of 40 connections, three rounds:
   10.7-10.9 ms before, 5.8-6.5 ms after.
7. **One file open per subscribe** (`dispatcher/position.py`). The subscribe checks open the newest file
   to check branch names; with start="current" the session then opened that same file again. It now
   keeps the checked reader for its start. subscribe() p50 with start="current" on a DAQ file, 40
   subscriptions, three rounds: 16.2-17.4 ms before, 11.5-12.2 ms after.

Tried and not kept:

- `recv_into` a preallocated buffer of the frame's size in `dispatcher/transport.py`: the client's CPU to
  receive 400 frames of 400 kB went from 0.021-0.036 s to 0.018-0.021 s. The receive path is a few
  per cent of the client's time (awkward's `from_buffers` dominates), so no end-to-end change could be
  measured; the code was left as it is.
- `gc.freeze()` in the parent before forking (fewer copy-on-write faults in children): connect p50
  11.1-13.2 ms with it, 9.4-12.4 ms without. Not kept.
- Building flat records directly in `decode_parts` instead of `ak.from_buffers`: 0.10 to 0.03 ms per
  10,000-record batch, about 4% of scenario 1; not worth a second decoding path.

Left as they are, with what was measured:

- Scenario 1 is now bound by the request/response round trip, not by CPU: for 2 M records the child
  uses 0.26-0.33 s of CPU, as much as uproot.iterate (0.28 s), the client 0.07-0.11 s more. With ten
  times fewer round trips (next_batch(100000) against uproot.iterate(step_size=100000)) the best run
  is 0.26 s against 0.21 s, ratio 0.82. On a loaded machine every round trip waits for the scheduler
  twice, which costs DDS more than the local reader. A client that asked for the next batch before
  handing out the current one (as next() already does with prefetch) would hide it.
- Subscribing to a DAQ file deserialises all three of its TTrees (`dispatcher/tail.py` `_scan`): 4.4 ms
  per (re)open, against 1.8 ms for the one subscribed tree. A child tailing a live file re-opens it
  whenever it grew, so with many live clients this is the larger cost.
- next() with prefetch 1 costs ~0.55 ms per record (one round trip, JSON header, awkward encode and
  decode of a one-record part; 0.7 ms to encode one DAQ record with jagged branches). Record mode
  uses it; the live latency targets are met with a wide margin.
"""
