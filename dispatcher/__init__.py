"""DDS server side: the dispatcher that serves live ROOT data to clients.

- ``cli``: the ``ddsparentserver`` and ``ddscomm`` commands.
- ``parent``: accept loop, fork, reap, stop; ``doorway``: the handshake before a fork (TLS, hello,
  access, admin stop and status).
- ``child``: one client's connection loop in a forked child; ``streaming``: streamed batches.
- ``session``: one client's subscription, position and keep-up mode, over its parts:
  ``position`` (the current file and its lifecycle), ``reader`` (cut, prescale, chunks),
  ``delivery`` with ``inorder``, ``newest``, ``synced`` (what comes next in each mode),
  ``groupmember`` (a member of a group); ``freshness``: lag and age; ``clock``: the clock and
  waiter it is given, and fakes for tests; ``session_errors``: how a request fails.
- ``groups``: the parent's ledger of shared subscriptions; ``grouplink``: the line to it.
- ``catalog``: which data files exist and which one is open; ``remote``: the same over XRootD.
- ``tail``: reading entries of a (growing) file safely; ``incremental``: following a growing file
  in place; ``baskets``: reads through a window of baskets; ``streams``: what a stream holds;
  ``budget``: time limits per branch; ``basketcache``: baskets decompressed once for every child.
- ``selection``: parse, check and compile selection cuts; ``fastcut``: numpy for the simple ones.
- ``subscription``: the subscription, checked field by field.
- ``protocol``: frames, messages and the state machine, sans-IO; ``layouts``: how
  the parts of a data reply make record sets; ``columnar``: record data buffers;
  ``compression``: the compressed wire; ``transport``: frames over a socket; ``tlsstream``:
  the optional TLS layer.
- ``status``, ``statustext``, ``metrics``: what every child does, ``ddscomm --status``, Prometheus.
- ``access``: loopback, allow-list and token checks; ``logsetup``: log levels and format.
- ``suggest``: one way to say "did you mean"; ``testing``: real servers for tests and benchmarks.

The wire layer, the only modules the client SDK (``clients``) imports from here:
``protocol``, ``layouts``, ``columnar``, ``subscription``, ``transport``,
``tlsstream`` and ``suggest``.

Nothing heavy is imported here: every fork and every command start pays for it.
"""

__version__ = "0.1.0"
