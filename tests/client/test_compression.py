"""Compression end to end: negotiated at HELLO, exact, fewer bytes, off on loopback by default."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest

from openenv_gym.client.connection import Connection, offered_codecs
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.protocol.compression import CODECS
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.image_envs import FramesEnv
from openenv_gym.testing.optional import require_module

INSTALL = "pip install 'openenv-gym[compression]'"
require_module("zstandard", family="compression", install=INSTALL)
require_module("lz4.frame", family="compression", install=INSTALL)

FRAMES = "openenv_gym.testing.image_envs:FramesEnv"


@dataclasses.dataclass(frozen=True)
class Servers:
    url: str  # accepts every codec
    plain_url: str  # accepts none (``--compression`` with no codec), as an old server


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """One server accepting every codec, one accepting none."""
    with (
        LocalProvider([FRAMES, "CartPole-v1"], num_servers=1) as accepting,
        LocalProvider([FRAMES], num_servers=1, extra_args=["--compression"]) as plain,
    ):
        yield Servers(accepting.urls[0], plain.urls[0])


def _frames_envs(num_envs: int) -> gymnasium.vector.SyncVectorEnv:
    return gymnasium.vector.SyncVectorEnv([FramesEnv for _ in range(num_envs)])


def _rollout(env: RemoteVectorEnv | gymnasium.vector.VectorEnv, steps: int) -> list[object]:
    rng = np.random.default_rng(1)
    out: list[object] = [env.reset(seed=3)]
    for _ in range(steps):
        out.append(env.step(rng.integers(0, 4, env.num_envs)))
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_compression_rollout_equals_in_process_with_fewer_bytes(
    servers: Servers, codec: str
) -> None:
    expected = _rollout(_frames_envs(8), 30)
    sizes = {}
    for compression in (None, codec):
        with RemoteVectorEnv(FRAMES, 8, urls=[servers.url], compression=compression) as env:
            connection = env._shards[0].connection  # the shard's wire, for its byte counts
            assert connection.compression == compression
            got = _rollout(env, 30)
            sizes[compression] = connection.bytes_received
        for exp, act in zip(expected, got, strict=True):
            for e, a in zip(exp, act, strict=True):  # type: ignore[call-overload]
                if isinstance(e, np.ndarray):
                    assert a.dtype == e.dtype and a.flags.writeable
                    np.testing.assert_array_equal(a, e)
                else:
                    assert a.keys() == e.keys()
    assert sizes[codec] * 10 < sizes[None], sizes  # ~28 KiB frames per env: 10x smaller at least


def test_compression_auto_is_off_on_loopback_and_on_elsewhere() -> None:
    assert offered_codecs("ws://127.0.0.1:1", "auto") == ()
    assert offered_codecs("ws://localhost:1", "auto") == ()
    assert offered_codecs("ws://10.1.2.3:1", "auto") == CODECS
    assert offered_codecs("wss://envs.example:443", "auto") == CODECS
    assert offered_codecs("ws://10.1.2.3:1", None) == ()
    assert offered_codecs("ws://127.0.0.1:1", "lz4") == ("lz4",)
    with pytest.raises(ValueError, match="compression must be 'auto', 'zstd', 'lz4' or None"):
        offered_codecs("ws://127.0.0.1:1", "brotli")  # type: ignore[arg-type]


def test_compression_default_on_loopback_sends_plain_messages(servers: Servers) -> None:
    connection = Connection(servers.url)
    try:
        assert connection.compression is None
    finally:
        connection.close()


def test_compression_server_without_codecs_answers_plain(servers: Servers) -> None:
    # A server started with `--compression` and no codec (or an old server): plain messages.
    with RemoteVectorEnv(FRAMES, 2, urls=[servers.plain_url], compression="zstd") as env:
        assert env._shards[0].connection.compression is None
        obs, _ = env.reset(seed=0)
        assert obs.shape == (2, 4, 84, 84)
        env.step(np.zeros(2, np.int64))


def test_compression_small_messages_stay_plain(servers: Servers) -> None:
    # CartPole's step replies of 4 envs are far under the threshold: nothing is compressed.
    with RemoteVectorEnv("CartPole-v1", 4, urls=[servers.url], compression="zstd") as env:
        connection = env._shards[0].connection
        env.reset(seed=0)
        before = connection.bytes_received
        env.step(np.zeros(4, np.int64))
        assert connection.compression == "zstd"
        assert 150 < connection.bytes_received - before < 1000


def test_compression_offer_to_a_server_older_than_it_falls_back_to_plain() -> None:
    # A server of before compression refuses HELLO's unknown field (its models forbid extra
    # keys) and stays in NEW; the client asks again without it. Emulated: the first HELLO with
    # a `compression` field gets the DecodeError such a server sends; the rest is a real Session.
    import threading

    from websockets.sync.server import serve

    from openenv_gym.protocol import codec
    from openenv_gym.server.catalog import EnvCatalog
    from openenv_gym.server.session import Session

    def handler(ws: object) -> None:
        session = Session(EnvCatalog(["CartPole-v1"]), compression=())
        for frame in ws:  # type: ignore[attr-defined]
            op, request_id, body = codec.decode(frame, max_bytes=None)
            if op == 0 and "compression" in body:
                error = {"type": "openenv_gym.errors.DecodeError", "message": "extra inputs"}
                ws.send(codec.encode([1, request_id, error]))  # type: ignore[attr-defined]
                continue
            ws.send(session.handle(frame))  # type: ignore[attr-defined]

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        connection = Connection(url, compression="zstd")
        try:
            assert connection.compression is None
            assert connection.hello.specs == ["CartPole-v1"]
        finally:
            connection.close()
            server.shutdown()


def test_compression_pool_results_are_exact_and_compressed(servers: Servers) -> None:
    # Pool results are pushed by the server (POOL_EVENT), not replies: compressed all the same.
    from openenv_gym import RemoteEnvPool
    from openenv_gym.client.options import ClientOptions

    runs = {}
    for compression in (None, "zstd"):
        options = ClientOptions(compression=compression)
        with RemoteEnvPool(FRAMES, 4, urls=[servers.url], seed=5, options=options) as pool:
            connection = pool._shards[0].connection  # the shard's wire, for its byte counts
            assert connection.compression == compression
            results = [pool.async_reset() or pool.recv()]
            for step in range(10):
                results.append(pool.step(np.full(4, step % 4), np.arange(4)))
            runs[compression] = (results, connection.bytes_received)
    for plain, packed in zip(runs[None][0], runs["zstd"][0], strict=True):
        for a, b in zip(plain[:4], packed[:4], strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(plain[4]["env_id"], packed[4]["env_id"])
    assert runs["zstd"][1] * 10 < runs[None][1]
