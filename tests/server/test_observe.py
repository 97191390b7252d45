"""The observation routes of a live server: /metrics, /status.json, the page's token exchange.

Servers run as real processes on loopback; ``/metrics`` is parsed with prometheus_client's own
parser while a client steps, and its counters are compared with what the client did.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import connect

import openenv_gym
from openenv_gym.providers.local import LocalProvider
from openenv_gym.server.observe import VIEW_COOKIE, view_key
from openenv_gym.testing.compliance._support import free_port, wait_for, wait_listening
from openenv_gym.testing.optional import require_module

TOKEN = "observe-s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalProvider]:
    with LocalProvider(["CartPole-v1", "FrozenLake-v1"], token=TOKEN) as provider:
        yield provider


def _get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """GET ``path`` of the server at ``url``; return status, headers and body."""
    parts = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _families(url: str) -> dict[str, Any]:
    parser = require_module(
        "prometheus_client.parser", family="metrics", install="pip install 'openenv-gym[metrics]'"
    )
    status, headers, body = _get(url, "/metrics", BEARER)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in parser.text_string_to_metric_families(body.decode())}


def _value(families: dict[str, Any], name: str, sample: str, **labels: str) -> float:
    """Sum the samples called ``sample`` of family ``name`` whose labels include ``labels``."""
    family = families.get(name)
    if family is None:
        return 0.0
    return sum(
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_step_counter_equals_the_steps_taken_while_a_client_steps(
    server: LocalProvider,
) -> None:
    url = server.urls[0]
    before = _families(url)
    steps_before = _value(
        before, "openenv_gym_env_steps", "openenv_gym_env_steps_total", spec="FrozenLake-v1"
    )
    scrapes: list[float] = []
    num_envs, count = 8, 150
    envs = openenv_gym.RemoteVectorEnv("FrozenLake-v1", num_envs, urls=[url], token=TOKEN)
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set() and len(scrapes) < 200:  # scrapes race the steps
            families = _families(url)
            scrapes.append(
                _value(
                    families,
                    "openenv_gym_env_steps",
                    "openenv_gym_env_steps_total",
                    spec="FrozenLake-v1",
                )
            )

    scraper = threading.Thread(target=scrape)
    try:
        envs.reset(seed=0)
        scraper.start()
        for _ in range(count):
            envs.step(envs.action_space.sample())
        stop.set()
        scraper.join(30)
        families = _families(url)
        live = _value(
            families, "openenv_gym_sessions", "openenv_gym_sessions", spec="FrozenLake-v1"
        )
    finally:
        stop.set()
        envs.close()
    steps = _value(
        families, "openenv_gym_env_steps", "openenv_gym_env_steps_total", spec="FrozenLake-v1"
    )
    assert steps - steps_before == num_envs * count
    step_requests = _value(
        families,
        "openenv_gym_requests",
        "openenv_gym_requests_total",
        spec="FrozenLake-v1",
        op="STEP",
        protocol="binary",
    )
    assert step_requests >= count
    histogram = _value(
        families,
        "openenv_gym_step_latency_seconds",
        "openenv_gym_step_latency_seconds_count",
        spec="FrozenLake-v1",
    )
    assert histogram == step_requests
    assert live >= 1
    assert scrapes and scrapes == sorted(scrapes)  # a counter never goes down mid-run
    sent = _value(
        families, "openenv_gym_sent_bytes", "openenv_gym_sent_bytes_total", spec="FrozenLake-v1"
    )
    assert sent > count * num_envs  # every reply carries at least a byte per env


def test_metrics_count_error_replies_by_type(server: LocalProvider) -> None:
    url = server.urls[0]
    with openenv_gym.RemoteEnv("CartPole-v1", url=url, token=TOKEN) as env:
        env.reset(seed=0)
        before = _value(
            _families(url),
            "openenv_gym_errors",
            "openenv_gym_errors_total",
            spec="CartPole-v1",
            type="AssertionError",
        )
        with pytest.raises(AssertionError):
            env.step(np.int64(7))
        after = _value(
            _families(url),
            "openenv_gym_errors",
            "openenv_gym_errors_total",
            spec="CartPole-v1",
            type="AssertionError",
        )
        status, _, body = _get(url, "/status.json", BEARER)
    assert after == before + 1
    document = json.loads(body)
    assert status == 200
    assert document["recent_errors"][0]["type"] == "AssertionError"
    assert "invalid" in document["recent_errors"][0]["message"]


def test_status_json_lists_each_live_session_with_its_spec_and_steps(
    server: LocalProvider,
) -> None:
    url = server.urls[0]
    with openenv_gym.RemoteEnv("CartPole-v1", url=url, token=TOKEN) as env:
        env.reset(seed=0)
        for _ in range(5):
            env.step(0)
        status, _, body = _get(url, "/status.json", BEARER)
        document = json.loads(body)
    assert status == 200
    assert document["specs"] == ["CartPole-v1", "FrozenLake-v1"]
    mine = [s for s in document["sessions"] if s["spec"] == "CartPole-v1" and s["steps"] == 5]
    assert len(mine) == 1 and mine[0]["num_envs"] == 1 and mine[0]["protocol"] == "binary"
    assert document["live_sessions"] == len(document["sessions"]) >= 1


def test_openenv_sessions_are_counted_under_their_protocol(server: LocalProvider) -> None:
    url = server.urls[0]
    before = _families(url)
    with connect(f"{url}/ws?env=CartPole-v1", additional_headers=BEARER) as ws:
        ws.send(json.dumps({"type": "reset", "data": {"seed": 0}}))
        ws.recv(timeout=10)
        for _ in range(3):
            ws.send(json.dumps({"type": "step", "data": {"action": 0}}))
            assert json.loads(ws.recv(timeout=10))["type"] == "observation"
        families = _families(url)
    labels = {"spec": "CartPole-v1", "protocol": "openenv", "op": "step"}
    delta = _value(families, "openenv_gym_requests", "openenv_gym_requests_total", **labels)
    delta -= _value(before, "openenv_gym_requests", "openenv_gym_requests_total", **labels)
    assert delta == 3


def test_observation_routes_need_the_token_and_refuse_foreign_origins(
    server: LocalProvider,
) -> None:
    url = server.urls[0]
    for path in ("/metrics", "/status.json"):
        assert _get(url, path)[0] == 401
        assert _get(url, path, {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(url, path, {**BEARER, "Origin": "http://evil.example"})[0] == 403
    status, _, page = _get(url, "/")
    assert status == 401 and b'name="token"' in page  # the page asks for the token


def test_status_page_trades_the_token_for_a_view_cookie_that_drives_no_env(
    server: LocalProvider,
) -> None:
    url = server.urls[0]
    status, headers, _ = _get(url, f"/?token={TOKEN}")
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert f"{VIEW_COOKIE}={view_key(TOKEN)}" in cookie and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": f"{VIEW_COOKIE}={view_key(TOKEN)}"}
    assert _get(url, "/status.json", jar)[0] == 200
    status, headers, page = _get(url, "/", jar)
    assert status == 200 and b"/status.json" in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert _get(url, "/status.json", {"Cookie": f"{VIEW_COOKIE}=forged"})[0] == 401
    assert _get(url, "/?token=wrong")[0] == 401
    # The cookie is no token: a WebSocket upgrade carrying it is refused.
    with pytest.raises(Exception, match="401"):
        connect(url, additional_headers=jar, open_timeout=10).close()


def _serve(*args: str, python: list[str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [*(python or [sys.executable, "-m", "openenv_gym"]), "serve", "CartPole-v1"]
    process = subprocess.Popen([*command, "--port", str(port), *args], stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, 60)
    except BaseException:
        process.kill()
        raise
    return process, f"ws://127.0.0.1:{port}"


def test_metrics_of_every_worker_are_merged_with_a_worker_label() -> None:
    process, url = _serve("--workers", "2")
    envs = []
    try:
        for _ in range(6):  # the kernel spreads connections over both workers' accept()s
            env = openenv_gym.RemoteEnv("CartPole-v1", url=url)
            env.reset(seed=0)
            for _ in range(4):
                env.step(0)
            envs.append(env)

        def merged() -> bool:
            document = json.loads(_get(url, "/status.json")[2])
            return sum(s["steps"] for s in document["sessions"]) == 24

        scrapes: list[Any] = []

        def scraped() -> bool:
            # Each request may reach either worker, and each sees the other's counts through
            # a snapshot up to 1 s old: wait until a scrape has them all.
            scrapes.append(_families(url))
            return bool(
                _value(scrapes[-1], "openenv_gym_env_steps", "openenv_gym_env_steps_total") == 24
            )

        assert wait_for(merged, 15) is not None  # other workers' snapshots are <= 1 s old
        assert wait_for(scraped, 15) is not None, "no scrape of /metrics counted the 24 steps"
        families = scrapes[-1]
        workers = {
            s.labels["worker"] for s in families["openenv_gym_worker_start_time_seconds"].samples
        }
        steps = _value(families, "openenv_gym_env_steps", "openenv_gym_env_steps_total")
    finally:
        for env in envs:
            env.close()
        process.terminate()
        process.wait(30)
    assert workers == {"0", "1"}
    assert steps == 24


def test_metrics_route_names_the_extra_when_prometheus_client_is_missing() -> None:
    blocked = "import sys; sys.modules['prometheus_client'] = None; "
    blocked += "from openenv_gym.cli import main; sys.exit(main())"
    process, url = _serve(python=[sys.executable, "-c", blocked])
    try:
        status, _, body = _get(url, "/metrics")
        json_status = _get(url, "/status.json")[0]
    finally:
        process.terminate()
        process.wait(30)
    assert status == 501 and b"openenv-gym[metrics]" in body
    assert json_status == 200


def test_no_metrics_flag_counts_nothing_and_serves_no_route() -> None:
    process, url = _serve("--no-metrics")
    try:
        status = _get(url, "/metrics")[0]
        with openenv_gym.RemoteEnv("CartPole-v1", url=url) as env:
            env.reset(seed=0)
            env.step(0)
    finally:
        process.terminate()
        process.wait(30)
    assert status != 200
