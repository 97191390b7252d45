"""A session's ``after_reply`` runs once per inline request, after its reply is written."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator

import pytest

from openenv_gym.ws.client import BlockingWebSocket
from openenv_gym.ws.http import PlainRequest
from openenv_gym.ws.server import ConnectionOptions, HttpReply, WebSocketConnection


class _Recorder:
    """A binary session that echoes and records what the connection calls, in order."""

    text_protocol = False
    closed = False

    def __init__(self) -> None:
        self.calls: list[str] = []

    def handle(self, message: bytes) -> bytes:
        self.calls.append(f"handle {message.decode()}")
        return b"echo " + message

    def after_reply(self) -> None:
        self.calls.append("after_reply")

    def refuse(self, reason: str) -> bytes:
        return reason.encode()

    def close(self) -> None:
        self.calls.append("close")


class _Router:
    max_request_body = 1024

    def __init__(self) -> None:
        self.sessions: list[_Recorder] = []

    def admit(self, path: str, query: str, headers: Iterable[tuple[str, str]]) -> None:
        return None

    def reply(self, path: str, query: str, *, upgrade: bool = True) -> None:
        return None

    def new_session(self, path: str, query: str) -> _Recorder:
        self.sessions.append(_Recorder())
        return self.sessions[-1]

    def admitted(self, session: object) -> bool:
        return True

    def request(self, request: PlainRequest) -> HttpReply:
        return HttpReply(404, "no\n")


@pytest.fixture
def served() -> Iterator[tuple[str, _Router]]:
    router, loop = _Router(), asyncio.new_event_loop()
    options = ConnectionOptions(max_message_bytes=1 << 20)
    server = loop.run_until_complete(
        loop.create_server(
            lambda: WebSocketConnection(router, options=options, on_close=lambda _: None),
            "127.0.0.1",
            0,
        )
    )
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{port}/", router
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def test_after_reply_follows_each_reply_once(served: tuple[str, _Router]) -> None:
    url, router = served
    ws = BlockingWebSocket(url, open_timeout=10, max_size=1 << 20)
    try:
        for index in range(3):
            ws.send(f"m{index}".encode())
            assert ws.recv(timeout=10) == f"echo m{index}".encode()
    finally:
        ws.close()
    (session,) = router.sessions
    # The third after_reply may still be on its way when recv returns: the reply goes first.
    for _ in range(1000):
        if session.calls.count("after_reply") == 3:
            break
        threading.Event().wait(0.01)
    calls = [call for call in session.calls if call != "close"]
    assert calls == [
        "handle m0",
        "after_reply",
        "handle m1",
        "after_reply",
        "handle m2",
        "after_reply",
    ]
