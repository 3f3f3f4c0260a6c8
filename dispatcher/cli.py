"""The ``ddsparentserver`` and ``ddscomm`` commands."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from typing import Any

import click

from . import logsetup

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _networks(ctx, param, value):
    from .access import parse_networks

    try:
        return parse_networks(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _token(path):
    """(token, warning) from a token file; (None, None) without one."""
    if not path:
        return None, None
    from .access import read_token_file

    try:
        return read_token_file(path)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--token-file'") from None


def _codecs(ctx, param, value):
    """``--compression``: a tuple of codec names (empty for none), or None for every installed one."""
    if value is None:
        return None
    from .compression import CODECS

    names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    unknown = [n for n in names if n not in CODECS]
    if unknown:
        raise click.BadParameter(f"unknown codec {unknown[0]!r}; known: {', '.join(CODECS)}, or none")
    return names


def _level(ctx, param, value):
    try:
        return logsetup.parse_level(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(context_settings=_CTX)
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=9090, show_default=True,
              help="port to listen on; 0 picks a free one")
@click.option("-m", "--max-clients", type=click.IntRange(1, 100000), default=10, show_default=True,
              help="most concurrent clients; more get SERVER_BUSY")
@click.option("-l", "--log-level", "level", default="Info", show_default=True, callback=_level,
              help="Verbose, Debug, Info, Warning, Error or Fatal")
@click.option("-d", "--data-dir", type=click.Path(file_okay=False), default=None,
              help="data directory [default: $DDS_DAQ_DATA_DIR]")
@click.option("-b", "--bind", default="0.0.0.0", show_default=True, help="address to listen on")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None, help="log here instead of stderr")
@click.option("--handshake-timeout", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              help="seconds a new connection has to say hello")
@click.option("--idle-timeout", type=click.FloatRange(1, 10**7), default=3600.0, show_default=True,
              help="seconds a client may stay silent between requests")
@click.option("--stall-timeout", type=click.FloatRange(0.1, 10**6), default=60.0, show_default=True,
              help="seconds a client may leave its data unread before it is dropped")
@click.option("--poll-interval", type=click.FloatRange(0.001, 10), default=0.01, show_default=True,
              help="seconds between checks for new data while a client waits")
@click.option("--allow", "allow", default=None, metavar="NETS", callback=_networks,
              help="only these addresses/networks may connect, e.g. 10.0.0.0/8,127.0.0.1 [default: everyone]")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="every client must send the shared secret in this file (DDSClient(token=...))")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
              help="serve TLS only, with this PEM certificate chain")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
              help="PEM private key for --tls-cert, if not in the same file")
@click.option("--compression", default=None, metavar="CODECS", callback=_codecs,
              help="codecs clients may ask for, e.g. zstd,lz4, or none [default: every one installed]")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="serve Prometheus metrics at http://ADDR:PORT/metrics [default: off]")
@click.option("--metrics-bind", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="address the metrics are served on")
@click.option("--group-linger", type=click.FloatRange(0, 10**7), default=300.0, show_default=True,
              metavar="SECONDS", help="a group whose members all left keeps its place this long")
@click.option("--group-state", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="keep the groups' places in FILE, so a restarted server continues them [default: memory only]")
@click.option("--basket-cache-mb", type=click.IntRange(0, 10**6), default=256, show_default=True, metavar="MB",
              help="baskets decompressed once for all clients, kept in /dev/shm up to this size; 0: off")
@click.option("--status-reports/--no-status-reports", default=True, hidden=True,
              help="children report their state to the parent (off: only to measure what it costs)")
def parentserver(port, max_clients, level, data_dir, bind, log_file, handshake_timeout, idle_timeout,
                 stall_timeout, poll_interval, allow, token_file, tls_cert, tls_key, compression, metrics_port,
                 metrics_bind, group_linger, group_state, basket_cache_mb, status_reports):
    """Serve the ROOT files of a DAQ data directory to DDS clients (one forked child per client)."""
    data_dir = data_dir or os.environ.get("DDS_DAQ_DATA_DIR")
    if not data_dir:
        raise click.UsageError("no data directory: give -d DIR or set DDS_DAQ_DATA_DIR")
    from .remote import check_data_dir, is_remote

    trouble = check_data_dir(data_dir)
    if trouble:
        raise click.UsageError(trouble)
    token, token_warning = _token(token_file)
    if tls_key and not tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    logsetup.configure(level, log_file)
    logsetup.set_ident(f"ddsparentserver[{os.getpid()}]")
    if token_warning:
        logging.getLogger("dds.parent").warning("%s", token_warning)
    from .parent import ParentServer, ServerConfig

    config = ServerConfig(
        data_dir=data_dir if is_remote(data_dir) else os.path.abspath(data_dir), port=port, bind=bind,
        max_clients=max_clients,
        handshake_timeout=handshake_timeout, idle_timeout=idle_timeout, stall_timeout=stall_timeout,
        poll_interval=poll_interval, allow=allow, token=token, tls_cert=tls_cert, tls_key=tls_key,
        compression=compression,
        metrics_port=metrics_port, metrics_bind=metrics_bind, status_reports=status_reports,
        group_linger=group_linger, group_state=os.path.abspath(group_state) if group_state else None,
        basket_cache_mb=basket_cache_mb,
    )
    try:
        server = ParentServer(config)
    except OSError as exc:  # ssl.SSLError too: unreadable or mismatched certificate and key
        raise click.ClickException(f"cannot use TLS certificate {tls_cert}: {exc}") from None
    try:
        server.bind()
    except OSError as exc:
        where = f"{bind}:{port}" if server.listener is None else f"{metrics_bind}:{metrics_port} (metrics)"
        raise click.ClickException(f"cannot listen on {where}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # --metrics-port without prometheus-client
        raise click.ClickException(str(exc)) from None
    # Import the readers and the child's own code now, once, so every forked child starts
    # with them loaded (imported after the fork, the child's code costs every connection ~4 ms).
    import dispatcher.child  # noqa: F401
    import dispatcher.session  # noqa: F401

    try:
        import setproctitle  # noqa: F401  (each child names itself with it)
    except ImportError:
        pass

    # Every object so far (the imports: most of the children's memory) goes to the permanent generation,
    # so no collection in a child walks them: a walk writes each object's header, and every page it writes
    # is copied into the child (copy-on-write), ~10 ms of every new client's first request.
    gc.freeze()
    sys.exit(server.serve())


@click.command(context_settings=_CTX)
@click.option("-s", "--shutdown", is_flag=True, help="stop the ddsparentserver")
@click.option("--status", is_flag=True, help="show the server and a row per client")
@click.option("--json", "as_json", is_flag=True, help="with --status: one JSON object (docs/STATUS.md)")
@click.option("--watch", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="with --status: redraw every SECONDS until Ctrl-C")
@click.option("-H", "--host", default="localhost", show_default=True)
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=9090, show_default=True)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="seconds to wait for the server")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="send the shared secret in this file (for a server started with --token-file)")
@click.option("--tls", is_flag=True, help="talk TLS (for a server started with --tls-cert)")
@click.option("--cafile", type=click.Path(dir_okay=False), default=None,
              help="with --tls: trust this CA (or self-signed) certificate [default: the system CAs]")
def ddscomm(shutdown, status, as_json, watch, host, port, timeout, token_file, tls, cafile):
    """Talk to a running ddsparentserver: stop it (-s) or show its status (--status)."""
    if shutdown and status:
        raise click.UsageError("give -s or --status, not both")
    if not shutdown and not status:
        raise click.UsageError("nothing to do: use -s to shut the server down, --status to see it")
    if (as_json or watch) and not status:
        raise click.UsageError("--json and --watch go with --status")
    from .protocol import Error, Ok, Stop

    token, _ = _token(token_file)
    admin = _Admin(host, port, timeout, token or "", tls or bool(cafile), cafile)
    if status:
        _show_status(admin, as_json, watch)
        return
    answer = admin.call(Stop())
    if isinstance(answer, Ok):
        click.echo(f"ddsparentserver at {host}:{port} is shutting down")
        sys.exit(0)
    msg = answer.message if isinstance(answer, Error) else str(answer)
    click.echo(f"ddsparentserver at {host}:{port} refused to shut down: {msg}", err=True)
    sys.exit(1)


class _Admin:
    """One admin request per connection: hello as ``admin``, the request, its answer."""

    def __init__(self, host: str, port: int, timeout: float, token: str, tls: bool, cafile: str | None):
        self.host, self.port, self.timeout, self.token, self.tls, self.cafile = host, port, timeout, token, tls, cafile

    def call(self, request) -> Any:
        """The server's answer to ``request``; exits 1 when there is no server or it refuses the hello."""
        from .protocol import PROTOCOL_VERSION, Connection, Error, Hello, Welcome
        from .transport import recv_message, send_message

        host, port = self.host, self.port
        sock: Any
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except OSError:
            click.echo(f"no ddsparentserver at {host}:{port}", err=True)
            sys.exit(1)
        if self.tls:
            from .access import TLSStream, client_tls_context

            try:
                sock = TLSStream(client_tls_context(self.cafile).wrap_socket(sock, server_hostname=host))
            except OSError as exc:
                sock.close()
                click.echo(f"TLS with ddsparentserver at {host}:{port} failed: {exc}", err=True)
                sys.exit(1)
        conn = Connection("client")
        try:
            with sock:
                send_message(sock, conn, Hello(PROTOCOL_VERSION, "ddscomm", role="admin", token=self.token))
                welcome = recv_message(sock, conn, self.timeout)
                if isinstance(welcome, Error):
                    click.echo(f"ddsparentserver at {host}:{port} refused: {welcome.message}", err=True)
                    sys.exit(1)
                assert isinstance(welcome, Welcome)
                send_message(sock, conn, request)
                return recv_message(sock, conn, self.timeout)
        except Exception as exc:  # refused, reset, timed out, garbled: there is no server to talk to
            click.echo(f"no ddsparentserver at {host}:{port} ({exc})", err=True)
            sys.exit(1)


def _show_status(admin: _Admin, as_json: bool, watch: float | None) -> None:
    import json
    import time

    from .protocol import Error, Ok, Status
    from .statustext import render

    where = f"{admin.host}:{admin.port}"
    try:
        while True:
            answer = admin.call(Status())
            if not isinstance(answer, Ok) or "status" not in answer.info:
                msg = answer.message if isinstance(answer, Error) else str(answer)
                click.echo(f"ddsparentserver at {where} refused the status: {msg}", err=True)
                sys.exit(1)
            st = answer.info["status"]
            text = json.dumps(st, indent=None if watch is None else 1) if as_json else render(st, where)
            if watch is None:
                click.echo(text)
                return
            click.clear()
            click.echo(f"every {watch:g} s (Ctrl-C stops)   {time.strftime('%H:%M:%S')}\n{text}")
            time.sleep(watch)
    except KeyboardInterrupt:
        return


def parentserver_main():
    parentserver(prog_name="ddsparentserver")


def ddscomm_main():
    ddscomm(prog_name="ddscomm")
