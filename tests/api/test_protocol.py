"""A request's head is bounded in size (431) and, like its body, in time (408): one client cannot grow the server
or hold a connection for ever (`squeezer/api/protocol.py`, `api/body.py`)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from squeezer.api.protocol import MAX_HEAD_BYTES
from squeezer.testing.server import ServerProcess


@pytest.fixture(scope="module")
def srv(tmp_path_factory, tiny_model):
    proc = ServerProcess([f"m={tiny_model('bert', 'base')}", "--read-timeout", "1"], tmp_path_factory.mktemp("protocol"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def connect(srv: ServerProcess) -> socket.socket:
    host, port = srv.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the one response the server sends before it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_head_past_the_bound_is_a_431_and_others_are_served_meanwhile(srv) -> None:
    with connect(srv) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ")
        sent = 0
        try:
            while sent <= 2 * MAX_HEAD_BYTES:
                sock.sendall(b"a" * 65536)
                sent += 65536
                assert httpx.post(srv.url + "/models/m", json={"inputs": "meanwhile"}).status_code == 200
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed after its answer: what is left unsent was never read
        status, body = answer(sock)
    assert status == 431 and "head" in body["error"]
    big = {"inputs": ["x " * 40_000]}  # a large body is not a large head
    assert httpx.post(srv.url + "/embed", json={**big, "truncate": True}).status_code == 200


@pytest.mark.parametrize("sent", [b"", b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-"], ids=["nothing", "half a head"])
def test_a_head_that_does_not_arrive_in_time_is_a_408(srv, sent: bytes) -> None:
    start = time.monotonic()
    with connect(srv) as sock:
        sock.sendall(sent)
        status, body = answer(sock)
    assert status == 408 and "--read-timeout" in body["error"] and 0.9 < time.monotonic() - start < 8


def test_a_body_that_does_not_arrive_in_time_is_a_408(srv) -> None:
    with connect(srv) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"inputs\": ")
        status, body = answer(sock)
    assert status == 408 and "body" in body["error"]
    assert httpx.get(srv.url + "/health").status_code == 200


def test_keep_alive_requests_are_not_cut_by_the_head_timer(srv) -> None:
    """A connection idle between its requests for longer than --read-timeout still serves the next one on the
    same socket (uvicorn's own keep-alive timeout, 5 s, governs that wait)."""
    request = (b"POST /models/m HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: 15\r\n\r\n{\"inputs\": \"a\"}")
    with connect(srv) as sock:
        for pause in (0, 1.5):
            time.sleep(pause)
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += sock.recv(65536)
            assert head.split()[1] == b"200", data
