"""OpenEnv's side of the benchmark: their server and client run, and the measures are sane."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from openenv_gym.bench import openenv_peer
from openenv_gym.testing.optional import require_module, unavailable

require_module("openenv", family="openenv", install="pip install 'openenv-gym[openenv]'")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    ok, reason = openenv_peer.available()
    if not ok:
        unavailable("openenv", reason)
    with openenv_peer.serve("CartPole-v1", max_sessions=8, startup_timeout=25) as server_url:
        yield server_url


def test_their_client_steps_their_server(url: str) -> None:
    types = openenv_peer._types()
    with types.Client(base_url=url).sync() as client:
        result = client.reset(seed=0)
        assert len(result.observation.observation) == 4
        assert not result.done
        steps = 0
        while not result.done and steps < 600:
            result = client.step(types.Action(action=0))
            steps += 1
            assert result.reward == 1.0
        assert result.done  # a constant push topples the pole
        assert client.state().step_count == steps


def test_measures_are_sane(url: str) -> None:
    results = openenv_peer.throughput(url, [1, 4], duration=0.3, repeats=1)
    assert [r.num_envs for r in results] == [1, 4]
    assert all(r.backend == openenv_peer.BACKEND_NAME for r in results)
    assert all(math.isfinite(r.steps_per_second) and r.steps_per_second > 0 for r in results)
    for client in ("sync", "async"):
        lat = openenv_peer.latency(url, 200, client=client, warmup=20)
        assert 0 < lat["p50_us"] <= lat["p99_us"] < 1e6
    size = openenv_peer.wire_bytes(url, steps=30)
    assert size["request_bytes"] > 0 and size["reply_bytes"] > 0
    assert size["bytes_per_step"] == pytest.approx(size["request_bytes"] + size["reply_bytes"])
    assert size["request_json_bytes"] > 0 and size["reply_json_bytes"] > 0


def test_available_says_why() -> None:
    ok, reason = openenv_peer.available()
    assert isinstance(ok, bool) and reason
