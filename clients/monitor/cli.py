"""``ddsmonitor``: the online monitor in the browser.

    ddsmonitor --config FILE [-H DDSHOST] [-p DDSPORT] [--port 8080] [--bind 127.0.0.1] [--token-file F]

Reads the config (:mod:`clients.monitor.config`), opens one DDS session per
(stream, cut), and serves the page and the API with uvicorn. Once it accepts
connections it prints ``ddsmonitor: serving http://HOST:PORT/`` (the real port,
also with ``--port 0``). Exit status 0 after SIGINT or SIGTERM, 2 for a usage or
config error (the message names the file, line and key), 1 when the port cannot
be taken.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from pathlib import Path

__all__ = ["main", "serve"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: seconds to wait for each session's first subscribe answer (a refused cut ends the start)
SUBSCRIBE_WAIT = 10.0

log = logging.getLogger("ddsmonitor")


def read_token(path: str) -> str:
    """The secret in a token file (first line, stripped).

    Raises:
        SystemExit: (2) the file cannot be read or is empty.
    """
    try:
        token = Path(path).read_text(encoding="utf-8").strip().splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise SystemExit(f"ddsmonitor: cannot read a token from --token-file {path}: "
                         f"{getattr(exc, 'strerror', None) or 'the file is empty'}") from None
    if len(token) < 8:
        raise SystemExit(f"ddsmonitor: the token in {path} is too short: use at least 8 characters")
    return token


def serve(config_path: str, host: str, port: int, http_port: int, bind: str, token: str | None,
          ready: threading.Event | None = None, out=None) -> int:
    """Run the monitor until SIGINT or SIGTERM.

    Args:
        config_path (str): the TOML config.
        host (str), port (int): the ddsparentserver.
        http_port (int): the HTTP port; 0 picks a free one.
        bind (str): the HTTP address.
        token (str | None): the secret for POST; None refuses every POST.
        ready (threading.Event | None): set once the page is served; default none.
        out: where the ``serving`` line goes; default stdout.

    Returns:
        int: the exit status.
    """
    import uvicorn

    from .app import create_app
    from .config import ConfigError, load_config
    from .feed import feeds_for
    from .filling import HistogramFiller
    from .packages import PackageStore

    out = out or sys.stdout
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"ddsmonitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    fillers = {name: HistogramFiller(spec) for name, spec in config.histograms.items()}
    store = PackageStore(config, fillers)
    feeds = feeds_for(config, fillers, store.touched, host, port)
    for feed in feeds:
        feed.start()
    for feed in feeds:
        feed.subscribed.wait(SUBSCRIBE_WAIT)
    refused = [feed.error for feed in feeds if feed.error]
    if refused:
        for feed in feeds:
            feed.stop()
        for feed in feeds:
            feed.join(10)
        for error in refused:
            print(f"ddsmonitor: {error}", file=sys.stderr)
        return EXIT_USAGE

    try:
        sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, http_port))
    except OSError as exc:
        for feed in feeds:
            feed.stop()
        print(f"ddsmonitor: cannot listen on {bind}:{http_port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    real_port = sock.getsockname()[1]
    app = create_app(store, feeds, token=token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on"))
    shown = "127.0.0.1" if bind in ("0.0.0.0", "") else bind
    url = f"http://[{shown}]:{real_port}/" if ":" in shown else f"http://{shown}:{real_port}/"

    async def run() -> None:
        import asyncio

        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            print(f"ddsmonitor: serving {url} (config {config.path}, ddsparentserver {host}:{port})", file=out,
                  flush=True)
            if ready is not None:
                ready.set()
        await task

    import asyncio
    import signal

    # uvicorn stops on SIGINT/SIGTERM and then raises the signal again for the handler found
    # before it: a recorder here makes that a normal exit (status 0) instead of a death by signal
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(run())
    finally:
        for feed in feeds:
            feed.stop()
        for feed in feeds:
            feed.join(10)
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def _build_cli():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--config", "config_path", required=True, metavar="FILE", help="the monitor config (TOML)")
    @click.option("-H", "--host", default="localhost", show_default=True, help="ddsparentserver host")
    @click.option("-p", "--dds-port", "dds_port", type=click.IntRange(1, 65535), default=9090, show_default=True,
                  help="ddsparentserver port")
    @click.option("--port", "http_port", type=click.IntRange(0, 65535), default=8080, show_default=True,
                  help="HTTP port of the page; 0 picks a free one")
    @click.option("--bind", default="127.0.0.1", show_default=True, help="HTTP address to listen on")
    @click.option("--token-file", default=None, metavar="F",
                  help="file holding the secret that POST /api/packages needs (without it: read-only)")
    @click.option("-l", "--log-level", default="info", show_default=True,
                  type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
    def main(config_path, host, dds_port, http_port, bind, token_file, log_level):
        """The online monitor: histograms filled from DDS, served live to a web page."""
        logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s ddsmonitor %(levelname)s %(message)s")
        token = read_token(token_file) if token_file else None
        sys.exit(serve(config_path, host, dds_port, http_port, bind, token))

    return main


def main(argv=None):
    """Console script ``ddsmonitor``."""
    return _build_cli().main(args=argv, prog_name="ddsmonitor")
