"""DDS server side: the dispatcher that serves live ROOT data to clients.

- ``cli``: the ``ddsparentserver`` and ``ddscomm`` commands.
- ``parent``: accept loop, fork, reap, stop.
- ``child``: one client's connection loop in a forked child.
- ``session``: one client's subscription, position and keep-up mode, over its parts:
  ``position`` (the current file and its lifecycle), ``reader`` (cut, prescale, chunks),
  ``inorder``, ``newest``, ``synced`` (what comes next in each mode); ``clock``: the
  clock and waiter it is given, and fakes for tests; ``session_errors``: how a request fails.
- ``catalog``: which data files exist and which one is open.
- ``tail``: reading entries of a (growing) file safely.
- ``selection``: parse, check and compile selection cuts.
- ``subscription``: the subscription, checked field by field.
- ``protocol``: frames, messages and the state machine, sans-IO; ``layouts``: how
  the parts of a data reply make record sets; ``columnar``: record data buffers;
  ``transport``: frames over a socket; ``tlsstream``: the optional TLS layer.
- ``access``: loopback, allow-list and token checks; ``logsetup``: log levels and format.
- ``suggest``: one way to say "did you mean".

The wire layer, the only modules the client SDK (``clients``) imports from here:
``protocol``, ``layouts``, ``columnar``, ``subscription``, ``transport``,
``tlsstream`` and ``suggest``.

Nothing heavy is imported here: every fork and every command start pays for it.
"""

__version__ = "0.1.0"
