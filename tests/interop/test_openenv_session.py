"""OpenEnv's ``/ws`` and HTTP routes under abuse: bounded, always answered, nothing leaked."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import gymnasium
import pytest
from gymnasium import spaces

from openenv_gym.interop.openenv.session import OpenEnvSession, http_reply
from openenv_gym.providers.local import LocalProvider
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.limits import Limits, Usage
from openenv_gym.testing.rawws import ws_connection

FAILING = "openenv_gym.testing.envs:FailingEnv"
RESET = json.dumps({"type": "reset", "data": {"seed": 0}})


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise LookupError(f"no VmHWM for pid {pid}")


def _ws_url(url: str, env_id: str | None = None) -> str:
    if env_id is None:
        return f"{url}/ws"
    return f"{url}/envs/{urllib.parse.quote(env_id, safe='')}/ws"


def _exchange(ws: Any, message: str | bytes) -> dict[str, Any]:
    ws.send(message)
    reply: dict[str, Any] = json.loads(ws.recv(30))
    return reply


@pytest.fixture(scope="module", params=[False, True], ids=["inline", "threads"])
def server(request: pytest.FixtureRequest) -> Iterator[LocalProvider]:
    """A server hosting CartPole and an env that cannot be built, at most 2 sessions.

    Its frames may be 64 MiB (as for large binary batches), so that the JSON limit of ``/ws``
    is what refuses a 30 MiB message, not the WebSocket layer.
    """
    args = ["--max-sessions", "2", "--max-message-bytes", str(64 << 20)]
    args += ["--threads"] if request.param else []
    with LocalProvider(["CartPole-v1", FAILING], extra_args=args) as provider:
        yield provider


def test_openenv_ws_large_json_is_refused_before_parsing(server: LocalProvider) -> None:
    items = (30 << 20) // 3  # 30 MiB of empty objects: ~870 MiB once parsed
    text = '{"type":"step","data":{"action":[' + ",".join(["{}"] * items) + "]}}"
    before = _peak_rss_mib(server.pids[0])
    with ws_connection(_ws_url(server.urls[0]), 30) as ws:
        assert _exchange(ws, RESET)["type"] == "observation"
        reply = _exchange(ws, text)
        assert reply["data"]["code"] == "INVALID_JSON"
        assert "message too large" in reply["data"]["message"]
        assert "at most 1048576" in reply["data"]["message"]
        assert _exchange(ws, RESET)["type"] == "observation"  # the session lives on
    # The frame itself is buffered (~2 copies); parsing it would have cost some 800 MiB more.
    assert _peak_rss_mib(server.pids[0]) - before < 200


def test_openenv_ws_deeply_nested_json_is_an_error_reply(server: LocalProvider) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with ws_connection(_ws_url(server.urls[0]), 30) as ws:
        reply = _exchange(ws, deep)
        assert reply == {
            "type": "error",
            "data": {"message": "Invalid JSON: nested too deeply", "code": "INVALID_JSON"},
        }
        nested_action = '{"type":"step","data":{"action":' + "[" * 900 + "]" * 900 + "}}"
        assert _exchange(ws, RESET)["type"] == "observation"
        assert _exchange(ws, nested_action)["type"] == "error"
        assert _exchange(ws, json.dumps({"type": "step", "data": {"action": 1}}))["type"] == (
            "observation"
        )


def test_openenv_ws_failing_env_constructor_releases_its_capacity(server: LocalProvider) -> None:
    for _ in range(3):  # more failures than the server admits sessions
        with ws_connection(_ws_url(server.urls[0], FAILING), 30) as ws:
            reply = _exchange(ws, RESET)
            assert reply["data"]["code"] == "FACTORY_ERROR"
            assert "FailingEnv cannot be built" in reply["data"]["message"]
    with (
        ws_connection(_ws_url(server.urls[0]), 30) as first,
        ws_connection(_ws_url(server.urls[0]), 30) as second,
    ):
        assert _exchange(first, RESET)["type"] == "observation"
        assert _exchange(second, RESET)["type"] == "observation"
        with ws_connection(_ws_url(server.urls[0]), 30) as third:
            reply = _exchange(third, RESET)
            assert reply["data"]["code"] == "CAPACITY_REACHED"
            assert "at capacity: 2/2 sessions" in reply["data"]["message"]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (RESET.encode(), "INVALID_JSON"),  # a binary frame: OpenEnv speaks text
        ("[1, 2]", "UNKNOWN_TYPE"),
        ('{"type": ["reset"]}', "UNKNOWN_TYPE"),
        ('{"type": "step", "data": [1]}', "EXECUTION_ERROR"),
        ('{"type": "step", "data": {"action": "left"}}', "EXECUTION_ERROR"),
        ('{"type": "reset", "data": {"seed": "x"}}', "EXECUTION_ERROR"),
        ("NaN garbage", "INVALID_JSON"),
    ],
)
def test_openenv_ws_every_bad_message_gets_an_error_reply(
    server: LocalProvider, message: str | bytes, code: str
) -> None:
    with ws_connection(_ws_url(server.urls[0]), 30) as ws:
        reply = _exchange(ws, message)
        assert reply["type"] == "error" and reply["data"]["code"] == code
        assert _exchange(ws, RESET)["type"] == "observation"


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_openenv_http_schema_of_failing_and_unknown_envs_is_a_json_404(
    server: LocalProvider,
) -> None:
    base = server.urls[0].replace("ws://", "http://")
    status, body = _get(f"{base}/schema?env={urllib.parse.quote(FAILING)}")
    assert status == 404 and "FailingEnv cannot be built" in body["detail"]
    status, body = _get(f"{base}/metadata?env=Nope-v0")
    assert status == 404 and "Nope-v0" in body["detail"]
    assert _get(f"{base}/schema")[1]["action"]["properties"]["action"]["maximum"] == 1


class CountingEnv(gymnasium.Env[Any, Any]):
    """Counts how often it is built."""

    builds = 0
    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        type(self).builds += 1


def test_openenv_http_schema_builds_each_env_once() -> None:
    counting = f"{__name__}:CountingEnv"
    catalog = EnvCatalog([counting, "CartPole-v1"])
    CountingEnv.builds = 0
    query = urllib.parse.urlencode({"env": counting})
    replies = [http_reply(catalog, path, query) for path in ["/schema", "/metadata"] * 50]
    assert CountingEnv.builds == 1
    assert replies[0][0] == 200 and replies[0][1]["action"]["required"] == ["action"]
    assert replies[1] == (
        200,
        {
            "name": counting,
            "description": "Counts how often it is built.",
            "version": "openenv-gym",
        },
    )
    assert http_reply(catalog, "/schema", "env=Unknown-v0")[0] == 404
    assert CountingEnv.builds == 1


def test_openenv_session_constructor_failure_leaves_counts_unchanged() -> None:
    usage = Usage(Limits(max_sessions=1))
    catalog = EnvCatalog([FAILING, "CartPole-v1"])
    for _ in range(3):
        session = OpenEnvSession(catalog, urllib.parse.urlencode({"env": FAILING}), usage)
        assert json.loads(session.handle(RESET.encode()))["data"]["code"] == "FACTORY_ERROR"
        session.close()
    assert (usage.sessions, usage.envs) == (0, 0)
    session = OpenEnvSession(catalog, "env=CartPole-v1", usage)
    assert json.loads(session.handle(RESET.encode()))["type"] == "observation"
    assert (usage.sessions, usage.envs) == (1, 1)
    session.close()
    assert (usage.sessions, usage.envs) == (0, 0)


def test_openenv_session_json_limit_is_configurable() -> None:
    session = OpenEnvSession(EnvCatalog(["CartPole-v1"]), "", max_json_bytes=64)
    reply = json.loads(
        session.handle(json.dumps({"type": "reset", "data": {"x": "y" * 64}}).encode())
    )
    assert reply["data"] == {
        "message": "message too large: 100 bytes of JSON, at most 64",
        "code": "INVALID_JSON",
    }
    assert json.loads(session.handle(RESET.encode()))["type"] == "observation"
    session.close()


def _http_status(url: str, path: str) -> int:
    request = urllib.request.Request(url.replace("ws://", "http://") + path)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_openenv_surface_is_off_with_no_openenv() -> None:
    with LocalProvider(["CartPole-v1"], extra_args=["--no-openenv"]) as off:
        url = off.urls[0]
        # /health is then no route of its own: a plain GET there is refused like any non-upgrade.
        assert _http_status(url, "/health") == 426
        assert _http_status(url, "/schema") == 426
        assert _http_status(url, "/healthz") == 200  # liveness stays
        with ws_connection(_ws_url(url), 30) as ws:
            ws.send(RESET)  # /ws is an ordinary binary-protocol session: JSON text is refused
            reply = ws.recv(30)
        assert isinstance(reply, bytes)


def test_openenv_surface_is_on_by_default(server: LocalProvider) -> None:
    assert _http_status(server.urls[0], "/health") == 200
