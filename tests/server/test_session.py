"""Session: the server's protocol state machine, bytes in and bytes out, no sockets."""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.hosting import HostingPolicy
from openenv_gym.server.session import Session, SessionState


class Client:
    """Drives a Session as a client would, one frame at a time."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.next_id = 1

    def raw(self, frame: bytes) -> list[Any]:
        reply = codec.decode(self.session.handle(frame))
        assert isinstance(reply, list) and len(reply) == 3
        return reply

    def call(self, op: Op, body: Any = None) -> list[Any]:
        self.next_id += 1
        status, request_id, reply = self.raw(codec.encode([int(op), self.next_id, body]))
        assert request_id == self.next_id
        return [status, reply]

    def ok(self, op: Op, body: Any = None) -> Any:
        status, reply = self.call(op, body)
        assert status == Status.OK, reply
        return reply

    def error(self, op: Op, body: Any = None) -> dict[str, Any]:
        status, reply = self.call(op, body)
        assert status == Status.ERROR, reply
        return reply


@pytest.fixture
def client() -> Client:
    catalog = EnvCatalog(["CartPole-v1", "openenv_gym.testing.envs:DictTupleEnv"])
    return Client(Session(catalog))


def open_session(client: Client, env_id: str = "CartPole-v1", **make: Any) -> dict[str, Any]:
    client.ok(Op.HELLO, {"protocol_version": PROTOCOL_VERSION})
    return client.ok(Op.MAKE, {"env_id": env_id, **make})


def test_session_hello_make_reset_step(client: Client) -> None:
    reply = open_session(client)
    assert reply["observation_space"]["type"] == "Box"
    assert reply["max_episode_steps"] == 500
    obs, info = client.ok(Op.RESET, {"seed": 0})
    assert obs.dtype == np.float32 and info == {}
    obs, reward, terminated, truncated, info = client.ok(Op.STEP, np.int64(1))
    assert obs.shape == (4,) and reward == 1.0 and terminated is False and truncated is False


def test_session_vector_step_carries_whole_arrays(client: Client) -> None:
    open_session(client, num_envs=5, autoreset_mode=AutoresetMode.SAME_STEP.value)
    client.ok(Op.RESET, {"seed": [1, 2, 3, 4, None]})
    obs, rewards, terminated, truncated, _ = client.ok(Op.STEP, np.ones(5, dtype=np.int64))
    assert obs.shape == (5, 4) and rewards.dtype == np.float64
    assert terminated.dtype == np.bool_ and truncated.shape == (5,)


def test_session_refuses_requests_before_handshake(client: Client) -> None:
    error = client.error(Op.STEP, np.int64(0))
    assert "not allowed in session state new" in error["message"]
    open_session(client)  # and the session is still usable


def test_session_version_mismatch_names_both_versions(client: Client) -> None:
    error = client.error(Op.HELLO, {"protocol_version": PROTOCOL_VERSION + 7})
    assert error["type"].endswith("VersionMismatchError")
    assert str(PROTOCOL_VERSION) in error["message"]
    assert str(PROTOCOL_VERSION + 7) in error["message"]
    assert error["details"] == {
        "client_version": PROTOCOL_VERSION + 7,
        "server_version": PROTOCOL_VERSION,
    }


def test_session_unknown_env_is_an_error_reply(client: Client) -> None:
    client.ok(Op.HELLO, {"protocol_version": PROTOCOL_VERSION})
    error = client.error(Op.MAKE, {"env_id": "Pendulum-v1"})
    assert error["type"] == "openenv_gym.errors.UnknownEnvError"
    assert "Pendulum-v1" in error["message"] and "CartPole-v1" in error["message"]
    assert client.session.state is SessionState.OPEN


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x93\x01",  # truncated array
        codec.encode("just a string"),
        codec.encode([99, 1, None]),  # unknown op
        codec.encode([int(Op.STEP), "id", None]),  # non-integer request id
    ],
)
def test_session_malformed_frame_gets_error_reply_and_session_lives(
    client: Client, frame: bytes
) -> None:
    open_session(client)
    status, _, body = client.raw(frame)
    assert status == Status.ERROR
    assert body["type"].startswith("openenv_gym.errors.")
    client.ok(Op.RESET, {"seed": 0})


def test_session_env_exception_becomes_error_reply_with_type(client: Client) -> None:
    open_session(client)
    client.ok(Op.RESET, {"seed": 0})
    error = client.error(Op.STEP, np.int64(5))  # outside Discrete(2)
    assert error["type"] == "AssertionError"
    assert error["traceback"] is None  # only with --debug
    client.ok(Op.STEP, np.int64(0))


def test_session_debug_sends_traceback() -> None:
    client = Client(Session(EnvCatalog(["CartPole-v1"]), debug=True))
    open_session(client)
    client.ok(Op.RESET, {"seed": 0})
    error = client.error(Op.STEP, np.int64(5))
    assert "Traceback" in error["traceback"] and "cartpole" in error["traceback"]


def test_session_refuses_private_attribute_names(client: Client) -> None:
    open_session(client)
    for op, body in [
        (Op.GET_ATTR, {"name": "_np_random"}),
        (Op.CALL, {"name": "__class__"}),
        (Op.SET_ATTR, {"name": "_x", "values": 1}),
    ]:
        assert "private" in client.error(op, body)["message"]


def test_session_oversized_frame_is_refused() -> None:
    client = Client(Session(EnvCatalog(["CartPole-v1"]), max_message_bytes=1024))
    open_session(client)
    status, _, body = client.raw(codec.encode([int(Op.STEP), 9, np.zeros(4096, np.uint8)]))
    assert status == Status.ERROR and "over the limit of 1024 bytes" in body["message"]


def test_session_close_closes_envs_and_refuses_more(client: Client) -> None:
    open_session(client, num_envs=3, autoreset_mode=AutoresetMode.NEXT_STEP.value)
    host = client.session.host
    assert host is not None and client.session.usage.envs == 3
    closed: list[int] = []
    for index, env in enumerate(host.envs):
        inner, close = env.unwrapped, env.unwrapped.close
        inner.close = lambda index=index, close=close: (closed.append(index), close())  # type: ignore[method-assign]
    client.ok(Op.CLOSE)
    assert sorted(closed) == [0, 1, 2]  # every env of the session was closed
    assert client.session.closed and client.session.host is None
    assert client.session.usage.envs == 0 and client.session.usage.sessions == 0
    assert "closed" in client.error(Op.RESET, {"seed": 0})["message"]


def test_session_state_reports_episode_and_step_count(client: Client) -> None:
    open_session(client, "openenv_gym.testing.envs:DictTupleEnv")
    client.ok(Op.RESET, {"seed": 0})
    client.ok(Op.STEP, np.int64(1))
    state = client.ok(Op.STATE)
    assert state["step_count"] == 1 and isinstance(state["episode_id"], str)


def test_session_refuses_private_names_through_wrapper_accessors(client: Client) -> None:
    open_session(client)
    for args in (["_np_random"], ["_max_episode_steps", 3]):
        error = client.error(Op.CALL, {"name": "get_wrapper_attr", "args": args})
        assert "private" in error["message"]
    assert client.ok(Op.CALL, {"name": "get_wrapper_attr", "args": ["gravity"]}) == 9.8


def test_session_set_attr_shares_one_list_value_across_envs() -> None:
    policy = HostingPolicy(set_attrs=frozenset({"tag"}))
    client = Client(Session(EnvCatalog(["CartPole-v1"], policy=policy)))
    open_session(client, num_envs=3, autoreset_mode=AutoresetMode.NEXT_STEP.value)
    client.ok(Op.SET_ATTR, {"name": "tag", "values": [1, 2], "per_env": False})
    assert client.ok(Op.GET_ATTR, {"name": "tag"}) == ([1, 2], [1, 2], [1, 2])
    client.ok(Op.SET_ATTR, {"name": "tag", "values": [7, 8, 9], "per_env": True})
    assert client.ok(Op.GET_ATTR, {"name": "tag"}) == (7, 8, 9)
    error = client.error(Op.SET_ATTR, {"name": "tag", "values": [1], "per_env": True})
    assert "1 values for 3 env(s)" in error["message"]


def test_session_request_bodies_are_validated_strictly(client: Client) -> None:
    client.ok(Op.HELLO, {"protocol_version": PROTOCOL_VERSION})
    error = client.error(Op.MAKE, {"env_id": "CartPole-v1", "num_envs": "2"})
    assert "num_envs" in error["message"]
    status, request_id, body = client.raw(codec.encode([True, 5, None]))
    assert status == Status.ERROR and request_id == 0 and "op must be an integer" in body["message"]


# --------------------------------------------------------------------------- gymnasium internals


class _RecordingSyncVectorEnv(SyncVectorEnv):
    """Records the calls ``SyncVectorEnv.step`` makes to ``_add_info``, as ``BatchHost`` does."""

    calls: list[tuple[int, dict[str, Any]]]

    def _add_info(
        self, vector_infos: dict[str, Any], env_info: dict[str, Any], env_num: int
    ) -> dict[str, Any]:
        self.calls.append((env_num, env_info))
        return super()._add_info(vector_infos, env_info, env_num)


def test_session_gymnasium_private_hooks_the_host_relies_on_are_unchanged() -> None:
    # BatchHost reads SyncVectorEnv._autoreset_envs and overrides VectorEnv._add_info (see
    # openenv_gym/server/host.py); if gymnasium renames or reshapes either, this fails first.
    assert list(inspect.signature(VectorEnv._add_info).parameters) == [
        "self",
        "vector_infos",
        "env_info",
        "env_num",
    ]
    envs = _RecordingSyncVectorEnv(
        [lambda: gymnasium.make("CartPole-v1")] * 2, autoreset_mode=AutoresetMode.NEXT_STEP
    )
    envs.calls = []
    envs.reset(seed=0)
    assert envs._autoreset_envs.dtype == np.bool_ and envs._autoreset_envs.shape == (2,)
    assert not envs._autoreset_envs.any()
    for _ in range(500):
        envs.calls = []
        _, _, terminated, truncated, _ = envs.step(np.zeros(2, dtype=np.int64))
        assert [index for index, _ in envs.calls] == [0, 1]  # once per env, in order
        assert np.array_equal(envs._autoreset_envs, terminated | truncated)
        if terminated.any():
            break
    assert terminated.any(), "always pushing left ends a CartPole episode within 500 steps"
    envs.close()


def test_session_step_info_merges_are_those_syncvectorenv_makes() -> None:
    session = Session(EnvCatalog(["CartPole-v1"]))
    client = Client(session)
    open_session(client, num_envs=2, autoreset_mode=AutoresetMode.SAME_STEP.value)
    client.ok(Op.RESET, {"seed": 0})
    expected = _RecordingSyncVectorEnv(
        [lambda: gymnasium.make("CartPole-v1")] * 2, autoreset_mode=AutoresetMode.SAME_STEP
    )
    expected.calls = []
    expected.reset(seed=0)
    finals = 0
    for _ in range(60):
        expected.calls = []
        *_, merges = client.ok(Op.STEP, np.zeros(2, dtype=np.int64))
        expected.step(np.zeros(2, dtype=np.int64))
        assert [index for index, _ in merges] == [i for i, info in expected.calls if info]
        finals += sum("final_obs" in info for _, info in merges)
    assert finals >= 2, "episodes ended (always pushing left) and their final_obs came through"
    expected.close()
