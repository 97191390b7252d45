"""Plain HTTP requests read before websockets' parser: bytes in, a request or a refusal out."""

from __future__ import annotations

import pytest

from openenv_gym.ws.http import (
    MAX_HEAD_BYTES,
    HttpError,
    PlainRequest,
    PlainRequestReader,
    is_plain_request,
)

HEAD = b"POST /envs/x/mcp?env=a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 7\r\n\r\n"


@pytest.mark.parametrize(
    ("start", "verdict"),
    [(b"GET / HTTP/1.1", False), (b"GE", None), (b"", None), (b"POST", True), (b"G3", True)],
)
def test_is_plain_request_tells_a_get_from_anything_else(start: bytes, verdict: bool) -> None:
    assert is_plain_request(start) is verdict


def test_plain_request_reader_waits_for_the_whole_body_fed_byte_by_byte() -> None:
    reader = PlainRequestReader(max_body=100)
    data = HEAD + b'{"a":1}'
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1] == PlainRequest(
        "POST",
        "/envs/x/mcp",
        "env=a",
        (("Host", "127.0.0.1"), ("Content-Length", "7")),
        b'{"a":1}',
    )


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"POST /mcp HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
        (b"POST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST /mcp HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        (b"POST /mcp HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /mcp\r\n\r\n", 400),
        (b"P(ST /mcp HTTP/1.1\r\n\r\n", 400),
        (b"POST /mcp HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"POST /mcp HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES, 431),
    ],
)
def test_plain_request_reader_refuses_bad_requests_with_their_status(
    data: bytes, status: int
) -> None:
    with pytest.raises(HttpError) as caught:
        PlainRequestReader(max_body=100).feed(data)
    assert caught.value.status == status
