"""Access control against real servers: the allow-list, the shared token, TLS, who may stop the server."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from clients import DDSClient, DDSConnectionError, DDSError, MessageType, Subscription
from conftest import BIN, ddscomm, self_signed, snarl_data, write_file
from dispatcher import access

FILE = "F00000001_0000.mdaq.root"


@pytest.fixture
def served_dir(data_dir):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 20)})
    return data_dir


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "dds.token"
    path.write_text("s3cret-Token-0123456789\n")
    path.chmod(0o600)
    return path


def reads_records(server, **client_args) -> None:
    with DDSClient(server.host, server.port, connect_timeout=5, **client_args) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        assert dds.next(timeout=5)["DaqSnarl"]["evt"] == 0
        assert dds.next_batch(100, timeout=5).entries.tolist() == list(range(1, 20))


def refused(server, code: MessageType, **client_args) -> str:
    with pytest.raises(DDSError) as info:
        DDSClient(server.host, server.port, connect_timeout=5, **client_args)
    assert info.value.message_type is code, info.value
    return str(info.value)


def parentserver(*args, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ddsparentserver"), "-p", "0", "-b", "127.0.0.1", *args],
                          capture_output=True, text=True, timeout=timeout)


def wait_exit(server, timeout: float = 10.0) -> int:
    return server.proc.wait(timeout)


def non_loopback_address() -> str:
    """An address of this host that is not loopback, so a connection to it is not from loopback."""
    candidates = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it only picks the outgoing address
            candidates.append(s.getsockname()[0])
        except OSError:
            pass
    try:
        candidates += [ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    for a in candidates:
        if not ipaddress.ip_address(a).is_loopback and not ipaddress.ip_address(a).is_unspecified:
            return a
    raise AssertionError("this host has no non-loopback IPv4 address to test remote peers with")


# ------------------------------------------------------------------ the checks themselves


def test_allow_list_parses_addresses_and_networks_and_names_a_bad_part():
    nets = access.parse_networks(" 10.0.0.0/8, 127.0.0.1 ,::1,192.168.1.7/24")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "192.168.1.0/24"]
    assert access.parse_networks("") is None and access.parse_networks(None) is None
    for bad in ("10.0.0.0/33", "localhost", "10.0.0.0/8,,nonsense", "1.2.3.4.5"):
        with pytest.raises(ValueError, match="is not an IP address or network"):
            access.parse_networks(bad)
    with pytest.raises(ValueError, match="no address"):
        access.parse_networks(" , ")


def test_allow_list_matches_peers_of_both_families_and_nothing_else():
    nets = access.parse_networks("10.0.0.0/8,127.0.0.1,2001:db8::/32")
    assert access.is_allowed(("10.1.2.3", 5000), nets)
    assert access.is_allowed(("::ffff:10.1.2.3", 5000, 0, 0), nets)  # IPv4 seen through an IPv6 socket
    assert access.is_allowed(("2001:db8::5", 1, 0, 0), nets)
    assert access.is_allowed("127.0.0.1", nets)
    assert not access.is_allowed(("127.0.0.2", 5000), nets)
    assert not access.is_allowed(("11.0.0.1", 5000), nets)
    assert not access.is_allowed(("::1", 1, 0, 0), nets)
    assert not access.is_allowed(("garbage", 1), nets)
    assert access.is_allowed(("203.0.113.9", 1), None)  # no list: everyone


def test_token_compare_is_exact_and_never_raises():
    assert access.token_matches("abc", "abc")
    assert access.token_matches("anything", None) and access.token_matches("", "")
    for given in ("abd", "ab", "abcd", "", "ABC", "\ud800", None, 123):
        assert not access.token_matches(given, "abc")


def test_token_file_first_line_is_the_token_and_a_readable_file_warns(tmp_path):
    f = tmp_path / "t"
    f.write_text("  tok en  \nsecond line\n")
    f.chmod(0o600)
    assert access.read_token_file(str(f)) == ("tok en", None)
    f.chmod(0o644)
    token, warning = access.read_token_file(str(f))
    assert token == "tok en" and "readable by other users" in warning and "644" in warning
    for content in (b"", b"\n\n", b"   \nx", b"\xff\xfe", b"x" * 5000):
        f.write_bytes(content)
        with pytest.raises(ValueError, match=f"token file {f}"):
            access.read_token_file(str(f))


# ------------------------------------------------------------------ allow-list on a real server


def test_peer_outside_the_allow_list_gets_forbidden_and_a_log_line(served_dir, server_factory):
    server = server_factory(served_dir, "--allow", "10.0.0.0/8,192.168.0.0/16")
    text = refused(server, MessageType.FORBIDDEN)
    assert "not allowed" in text
    assert "refused connection from 127.0.0.1" in server.log
    assert "not in the allowed networks" in server.log
    assert "access: clients from 10.0.0.0/8,192.168.0.0/16" in server.log
    assert server.proc.poll() is None and server.children() == []


def test_peer_inside_the_allow_list_is_served(served_dir, server_factory):
    server = server_factory(served_dir, "--allow", "10.0.0.0/8,127.0.0.1")
    reads_records(server)
    assert "refused" not in server.log


def test_bad_allow_list_is_a_usage_error(served_dir):
    done = parentserver("-d", str(served_dir), "--allow", "10.0.0.0/8,not-a-net")
    assert done.returncode == 2
    assert "'not-a-net' is not an IP address or network" in done.stderr


def test_remote_peer_outside_the_allow_list_is_refused_while_loopback_is_served(served_dir, server_factory):
    remote = non_loopback_address()
    server = server_factory(served_dir, "-b", "0.0.0.0", "--allow", "127.0.0.0/8")
    with pytest.raises(DDSError) as info:
        DDSClient(remote, server.port, connect_timeout=5)
    assert info.value.message_type is MessageType.FORBIDDEN
    assert f"refused connection from {remote}" in server.log
    reads_records(server)


# ------------------------------------------------------------------ token


def test_server_with_a_token_refuses_a_missing_or_wrong_token_and_serves_the_right_one(served_dir, server_factory,
                                                                                       token_file):
    server = server_factory(served_dir, "--token-file", str(token_file))
    assert "token required" in server.log
    assert "wrong or missing token" in refused(server, MessageType.FORBIDDEN)
    refused(server, MessageType.FORBIDDEN, token="s3cret-Token-012345678")
    refused(server, MessageType.FORBIDDEN, token="s3cret-Token-0123456789x")
    assert server.log.count("gave a wrong token") == 3
    assert server.children() == []
    reads_records(server, token="s3cret-Token-0123456789")
    assert "s3cret" not in server.log  # the secret itself is never logged


def test_token_that_is_not_valid_unicode_is_refused_without_a_crash(served_dir, server_factory, token_file):
    server = server_factory(served_dir, "--token-file", str(token_file))
    head = b'{"type":"hello","protocol":1,"client":"x","token":"s3cret\\ud800"}'
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(struct.pack("!II", len(head), 0) + head)
        reply = sock.recv(4096)
    assert b'"FORBIDDEN"' in reply
    assert "gave a wrong token" in server.log and "Traceback" not in server.log
    reads_records(server, token="s3cret-Token-0123456789")


def test_token_file_that_others_can_read_is_served_with_a_warning(served_dir, server_factory, token_file):
    token_file.chmod(0o644)
    server = server_factory(served_dir, "--token-file", str(token_file))
    assert "readable by other users" in server.log
    reads_records(server, token="s3cret-Token-0123456789")


@pytest.mark.parametrize("content", ["", "\n   \n"], ids=["empty", "blank"])
def test_empty_token_file_is_a_usage_error(served_dir, tmp_path, content):
    f = tmp_path / "empty.token"
    f.write_text(content)
    done = parentserver("-d", str(served_dir), "--token-file", str(f))
    assert done.returncode == 2 and "holds no token" in done.stderr


def test_missing_token_file_is_a_usage_error(served_dir, tmp_path):
    done = parentserver("-d", str(served_dir), "--token-file", str(tmp_path / "nope"))
    assert done.returncode == 2 and "nope" in done.stderr


def test_ddscomm_needs_the_token_to_stop_a_server_that_has_one(served_dir, server_factory, token_file, tmp_path):
    server = server_factory(served_dir, "--token-file", str(token_file))
    done = ddscomm("-s", "-H", "127.0.0.1", "-p", str(server.port))
    assert done.returncode == 1 and "refused" in done.stderr and "token" in done.stderr
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-it\n")
    done = ddscomm("-s", "-H", "127.0.0.1", "-p", str(server.port), "--token-file", str(wrong))
    assert done.returncode == 1
    assert server.proc.poll() is None
    done = ddscomm("-s", "-H", "127.0.0.1", "-p", str(server.port), "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    assert wait_exit(server) == 0


# ------------------------------------------------------------------ who may stop the server


def test_remote_shutdown_without_a_token_is_forbidden_and_the_server_keeps_serving(served_dir, server_factory):
    remote = non_loopback_address()
    server = server_factory(served_dir, "-b", remote)
    server.host = remote  # it listens there only
    done = ddscomm("-s", "-H", remote, "-p", str(server.port))
    assert done.returncode == 1
    assert "refused to shut down" in done.stderr and "own host" in done.stderr
    assert "refused: not a loopback peer" in server.log
    assert server.proc.poll() is None
    reads_records(server)


def test_remote_shutdown_with_the_admin_token_stops_the_server(served_dir, server_factory, token_file):
    remote = non_loopback_address()
    server = server_factory(served_dir, "-b", remote, "--token-file", str(token_file))
    done = ddscomm("-s", "-H", remote, "-p", str(server.port), "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    assert wait_exit(server) == 0
    assert f"shutdown requested by {remote}" in server.log and "(admin token)" in server.log


def test_stop_request_inside_a_data_session_is_forbidden(served_dir, server_factory):
    from dispatcher.protocol import PROTOCOL_VERSION, Connection, Error, Hello, Stop, Welcome
    from dispatcher.transport import recv_message, send_message

    server = server_factory(served_dir)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        conn = Connection("client")
        send_message(sock, conn, Hello(PROTOCOL_VERSION, "sneaky", role="client"))
        assert isinstance(recv_message(sock, conn, 5), Welcome)
        send_message(sock, conn, Stop())
        reply = recv_message(sock, conn, 5)
    assert isinstance(reply, Error) and reply.code == MessageType.FORBIDDEN.value
    assert server.proc.poll() is None
    reads_records(server)


# ------------------------------------------------------------------ TLS


def test_tls_server_serves_a_tls_client_that_trusts_its_certificate(served_dir, server_factory, certificate):
    cert, key = certificate
    server = server_factory(served_dir, "--tls-cert", str(cert), "--tls-key", str(key))
    assert "; TLS" in server.log
    reads_records(server, cafile=str(cert))
    assert "TLS with 127.0.0.1" in server.log  # the handshake, in the parent
    reads_records(server, tls=True, cafile=str(cert), token="ignored without --token-file")


def test_tls_with_token_refuses_a_wrong_token_inside_tls(served_dir, server_factory, certificate, token_file):
    cert, key = certificate
    server = server_factory(served_dir, "--tls-cert", str(cert), "--tls-key", str(key),
                            "--token-file", str(token_file))
    refused(server, MessageType.FORBIDDEN, cafile=str(cert), token="guess")
    reads_records(server, cafile=str(cert), token="s3cret-Token-0123456789")


def test_plain_client_to_a_tls_server_is_told_to_use_tls(served_dir, server_factory, certificate):
    cert, key = certificate
    server = server_factory(served_dir, "--tls-cert", str(cert), "--tls-key", str(key))
    assert "speaks TLS only" in refused(server, MessageType.PROTOCOL_ERROR)
    assert "did not start a TLS handshake" in server.log
    reads_records(server, cafile=str(cert))


def test_tls_client_that_does_not_trust_the_certificate_refuses_to_talk(served_dir, server_factory, certificate):
    cert, key = certificate
    server = server_factory(served_dir, "--tls-cert", str(cert), "--tls-key", str(key))
    with pytest.raises(DDSConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        DDSClient(server.host, server.port, tls=True, connect_timeout=5)  # system CAs only
    deadline = time.monotonic() + 5
    while "TLS handshake with" not in server.log and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "TLS handshake with 127.0.0.1" in server.log and "failed" in server.log
    reads_records(server, cafile=str(cert))


def test_tls_client_checks_the_host_name(served_dir, server_factory, certificate, tmp_path):
    cert, key = certificate
    other = tmp_path / "other.pem"  # a certificate for another name, trusted, but not this server's
    self_signed(other, tmp_path / "other.key", "elsewhere.example", "DNS:elsewhere.example")
    server = server_factory(served_dir, "--tls-cert", str(other), "--tls-key", str(tmp_path / "other.key"))
    with pytest.raises(DDSConnectionError, match="TLS with ddsparentserver"):
        DDSClient(server.host, server.port, cafile=str(other), connect_timeout=5)
    assert server.proc.poll() is None


def test_tls_client_to_a_plain_server_fails_cleanly(served_dir, server_factory, certificate):
    server = server_factory(served_dir)
    with pytest.raises(DDSConnectionError, match="TLS with ddsparentserver"):
        DDSClient(server.host, server.port, cafile=str(certificate[0]), connect_timeout=5)
    assert "protocol error from 127.0.0.1" in server.log
    reads_records(server)


def test_tls_child_ends_when_its_client_vanishes_mid_wait(served_dir, server_factory, certificate):
    cert, key = certificate
    server = server_factory(served_dir, "--tls-cert", str(cert), "--tls-key", str(key))
    code = (
        "import sys; from clients import DDSClient, Subscription\n"
        f"c = DDSClient('127.0.0.1', {server.port}, cafile={str(cert)!r})\n"
        "c.subscribe(Subscription(streams=['Nothing'], keep_up='all'))\n"
        "print('waiting', flush=True)\n"
        "c.next(timeout=60)\n"
    )
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "waiting"
        deadline = time.monotonic() + 10
        while not server.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.children()) == 1
        time.sleep(0.2)  # the child is inside next(), waiting for data that never comes
        client.kill()
        client.wait(5)
        deadline = time.monotonic() + 10
        while server.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.children() == []
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)
        client.stdout.close()
    assert "client left" in server.log


def test_tls_client_waiting_in_next_is_told_when_the_server_stops(served_dir, server_factory, certificate):
    cert, key = certificate
    server = server_factory(served_dir, "--tls-cert", str(cert), "--tls-key", str(key))
    with DDSClient(server.host, server.port, cafile=str(cert), connect_timeout=5) as dds:
        dds.subscribe(Subscription(streams=["Nothing"], keep_up="all"))
        stopper = threading.Timer(0.5, server.proc.terminate)  # while the child waits inside next()
        stopper.start()
        try:
            with pytest.raises(DDSError) as info:
                dds.next(timeout=30)
        finally:
            stopper.join(5)
        assert info.value.message_type is MessageType.SHUTDOWN
    assert wait_exit(server) == 0


def test_ddscomm_stops_a_tls_server_over_tls(served_dir, server_factory, certificate, token_file):
    cert, key = certificate
    server = server_factory(served_dir, "--tls-cert", str(cert), "--tls-key", str(key),
                            "--token-file", str(token_file))
    done = ddscomm("-s", "-H", "127.0.0.1", "-p", str(server.port), "--tls", "--cafile", str(cert))
    assert done.returncode == 1  # TLS, but no token
    done = ddscomm("-s", "-H", "127.0.0.1", "-p", str(server.port), "--token-file", str(token_file))
    assert done.returncode == 1 and "TLS only" in done.stderr  # token, but no TLS
    done = ddscomm("-s", "-H", "127.0.0.1", "-p", str(server.port), "--tls", "--cafile", str(cert),
                   "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    assert wait_exit(server) == 0


def test_unusable_certificate_is_a_start_error(served_dir, tmp_path, certificate):
    cert, _ = certificate
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for args in (["--tls-cert", str(garbage)], ["--tls-cert", str(tmp_path / "missing.pem")],
                 ["--tls-cert", str(cert)]):  # the last: no key given, and none in the file
        done = parentserver("-d", str(served_dir), *args)
        assert done.returncode == 1, args
        assert "cannot use TLS certificate" in done.stderr
    done = parentserver("-d", str(served_dir), "--tls-key", str(cert))
    assert done.returncode == 2 and "--tls-key needs --tls-cert" in done.stderr

