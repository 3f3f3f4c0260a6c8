"""DDS server side: the dispatcher that serves live ROOT data to clients.

- ``cli``: the ``ddsparentserver`` and ``ddscomm`` commands.
- ``parent``: accept loop, fork, reap, stop.
- ``child``: one client's connection loop in a forked child.
- ``session``: one client's subscription, position and keep-up mode.
- ``catalog``: which data files exist and which one is open.
- ``tail``: reading entries of a (growing) file safely.
- ``selection``: parse, check and compile selection cuts.
- ``subscription``: the subscription, checked field by field.
- ``protocol``: frames and messages, sans-IO; ``columnar``: record data buffers;
  ``transport``: frames over a socket.
- ``access``: loopback, allow-list and token checks; ``logsetup``: log levels and format.

Nothing heavy is imported here: every fork and every command start pays for it.
"""

__version__ = "0.1.0"
