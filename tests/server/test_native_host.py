"""NativeHost: sessions hosting a spec's own vector env (vector_entry_point), no sockets."""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from openenv_gym.errors import AutoresetModeMismatchError, VectorizationError
from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, MakeReply, MakeRequest, Op, Status
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.hosting import HostingPolicy
from openenv_gym.server.native_host import NativeHost
from openenv_gym.server.session import Session
from openenv_gym.testing.vector_envs import COUNTING_SAME_STEP

COUNTING = f"openenv_gym.testing.vector_envs:{COUNTING_SAME_STEP}"


def _catalog(**kwargs: Any) -> EnvCatalog:
    return EnvCatalog(["CartPole-v1", "Pendulum-v1", COUNTING], **kwargs)


def _request(session: Session, op: Op, body: Any = None) -> tuple[int, Any]:
    status, _, reply = codec.decode(session.handle(codec.encode([int(op), 1, body])))
    return status, reply


def _session(make: dict[str, Any], catalog: EnvCatalog | None = None) -> tuple[Session, Any]:
    session = Session(catalog or _catalog())
    assert _request(session, Op.HELLO, {"protocol_version": PROTOCOL_VERSION})[0] == Status.OK
    return session, _request(session, Op.MAKE, make)


def test_native_host_session_steps_equal_make_vec_in_process() -> None:
    make = {"env_id": "CartPole-v1", "num_envs": 8, "server_vectorization": "vector_entry_point"}
    session, (status, reply) = _session(make)
    assert status == Status.OK, reply
    described = MakeReply.model_validate(reply)
    assert described.autoreset_mode == "NextStep" and described.info_form == "vector"
    expected = gymnasium.make_vec("CartPole-v1", 8, vectorization_mode="vector_entry_point")
    obs, info = _request(session, Op.RESET, {"seed": 5})[1]
    want_obs, want_info = expected.reset(seed=5)
    np.testing.assert_array_equal(obs, want_obs, strict=True)
    assert info == want_info
    rng = np.random.default_rng(0)
    dones = 0
    for _ in range(300):
        actions = rng.integers(0, 2, size=8)
        got = _request(session, Op.STEP, actions)[1]
        want = expected.step(actions)
        for a, e in zip(got[:4], want[:4], strict=True):
            np.testing.assert_array_equal(a, e, strict=True)
        assert got[4] == want[4]
        dones += int(np.sum(want[2] | want[3]))
    assert dones > 8  # autoresets happened
    expected.close()
    session.close()


def test_native_host_reply_leaves_out_new_fields_for_sync_sessions() -> None:
    session, (status, reply) = _session(
        {"env_id": "CartPole-v1", "num_envs": 2, "autoreset_mode": "NextStep"}
    )
    assert status == Status.OK and "info_form" not in reply and "autoreset_mode" not in reply
    assert "server_vectorization" not in MakeRequest(env_id="CartPole-v1").wire()
    session.close()


def test_native_host_refuses_a_spec_without_vector_entry_point() -> None:
    make = {"env_id": "Pendulum-v1", "num_envs": 2, "server_vectorization": "vector_entry_point"}
    session, (status, reply) = _session(make)
    assert status == Status.ERROR
    assert reply["type"] == "openenv_gym.errors.VectorizationError"
    assert "'Pendulum-v1'" in reply["message"] and "no vector_entry_point" in reply["message"]
    session.close()
    assert session.usage.envs == 0  # the reservation was released


def test_native_host_refuses_another_autoreset_mode_naming_both() -> None:
    hosted = _catalog().hosted("CartPole-v1")
    with pytest.raises(
        AutoresetModeMismatchError, match=r"runs autoreset mode 'NextStep'.*'SameStep'"
    ):
        NativeHost(hosted, {}, num_envs=2, autoreset_mode=AutoresetMode.SAME_STEP)
    error = AutoresetModeMismatchError("CartPole-v1", "SameStep", "NextStep")
    assert isinstance(error, ValueError) and isinstance(error, VectorizationError)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_native_host_applies_the_operators_kwargs_policy() -> None:
    catalog = _catalog(policy=HostingPolicy(kwargs={"max_episode_steps": 7}))
    make = {
        "env_id": "CartPole-v1",
        "num_envs": 2,
        "kwargs": {"max_episode_steps": 9},
        "server_vectorization": "vector_entry_point",
    }
    status, reply = _session(make, catalog)[1]
    assert status == Status.ERROR and reply["type"] == "openenv_gym.errors.KwargNotAllowedError"
    host = NativeHost(catalog.hosted("CartPole-v1"), {}, num_envs=2, autoreset_mode=None)
    assert host.describe()["max_episode_steps"] == 7 and host.get_attr("max_episode_steps") == 7
    host.close()
    host.close()  # idempotent


def test_native_host_same_step_engine_partial_reset_state_and_attrs() -> None:
    host = NativeHost(_catalog().hosted(COUNTING), {}, num_envs=4, autoreset_mode=None)
    assert host.autoreset_mode is AutoresetMode.SAME_STEP
    host.reset(3, None)
    stepped = host.step(np.ones(4, dtype=np.int64))[0]
    mask = np.array([True, False, False, True])
    new_obs, _ = host.reset(None, {"reset_mask": mask})
    np.testing.assert_array_equal(new_obs[~mask], stepped[~mask])  # the others keep theirs
    assert [s["step_count"] for s in host.state()] == [0, 1, 1, 0]
    host.set_attr("tag", 5, per_env=False)
    assert host.get_attr("tag") == 5 and host.call("tag", [], {}) == 5
    with pytest.raises(ValueError, match=r"one 'tag' for its 4 envs"):
        host.set_attr("tag", [1, 2, 3, 4], per_env=True)
    host.close()


def _episode_states(host: NativeHost) -> list[tuple[int, int]]:
    """(episode number, step count) per env: the session-independent part of ``state()``."""
    return [
        (int(s["episode_id"].rsplit("-", 1)[1]) if s["episode_id"] else 0, s["step_count"])
        for s in host.state()
    ]


@pytest.mark.parametrize("engine", ["CartPole-v1", COUNTING])
def test_native_host_bookkeeping_waits_for_the_reply_and_never_changes_state(engine: str) -> None:
    # The server settles a step's bookkeeping once its reply is written (after_reply); a host
    # nobody settles must still count every episode, from its next request on.
    settled, unsettled = (
        NativeHost(_catalog().hosted(engine), {}, num_envs=8, autoreset_mode=None) for _ in range(2)
    )
    rng = np.random.default_rng(0)
    ends = last = 0
    for host in (settled, unsettled):
        host.reset(0, None)
    for step in range(120):
        actions = rng.integers(0, 2, size=8)
        flags = [host.step(actions)[2:4] for host in (settled, unsettled)]
        assert settled._unsettled is not None  # the step's flags wait for the reply
        settled.settle()
        assert settled._unsettled is None
        if engine == "CartPole-v1":
            last = int(np.logical_or(*flags[0]).sum())
            ends += last
        if step % 40 == 39:  # state() settles the host nobody settled
            assert _episode_states(unsettled) == _episode_states(settled)
    assert _episode_states(unsettled) == _episode_states(settled)
    if engine == "CartPole-v1":  # NEXT_STEP: an episode ended by the last step starts later
        assert ends > 8
        assert sum(number for number, _ in _episode_states(settled)) == 8 + ends - last
    for host in (settled, unsettled):
        host.close()


def test_session_after_reply_settles_its_host() -> None:
    session, (status, _) = _session(
        {"env_id": "CartPole-v1", "num_envs": 4, "server_vectorization": "vector_entry_point"}
    )
    assert status == Status.OK
    _request(session, Op.RESET, {"seed": 0})
    _request(session, Op.STEP, np.zeros(4, dtype=np.int64))
    host = session.host
    assert isinstance(host, NativeHost) and host._unsettled is not None
    session.after_reply()
    assert host._unsettled is None
    session.close()
    session.after_reply()  # a closed session has nothing left: no error
