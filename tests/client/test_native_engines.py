"""RemoteVectorEnv over the operator's native engines (envpool, ale-py, module:attr), diffed.

Each remote engine is diffed step by step against the same engine built in-process exactly as
a user builds it (``envpool.make_gymnasium(task, num_envs=n, seed=s)``,
``AtariVectorEnv(game, n)``, the VectorEnv class itself): one shard, two shards (shard ``k`` of
envs ``start_k:stop_k`` equals the engine of its size under seed ``s + start_k``), every
autoreset mode the engine declares, partial resets, attributes, and the typed errors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, VectorEnv

import openenv_gym  # noqa: F401 - registers the openenv/ ids
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import AutoresetModeMismatchError, VectorizationError
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.optional import require_module
from openenv_gym.testing.vector_envs import COUNTING_SAME_STEP, CountingSameStepVectorEnv

NATIVE = "vector_entry_point"
ENVPOOL_CARTPOLE = "envpool:CartPole-v1"
PONG = "ale:pong"
COUNTING_CLASS = "openenv_gym.testing.vector_envs:CountingSameStepVectorEnv"
FACTORY = "openenv_gym.testing.vector_envs:counting_vector_env"
COUNTING_ID = f"openenv_gym.testing.vector_envs:{COUNTING_SAME_STEP}"  # gets FACTORY
SHORT_PONG = {"max_num_frames_per_episode": 120}  # 30 steps of 4 frames: episodes end

AssertSame = Callable[[Any, Any, str], None]


@pytest.fixture(scope="module")
def engine_servers() -> Iterator[LocalProvider]:
    """Two local servers hosting the engines (the optional families are required in CI)."""
    require_module("envpool", family="envpool", install="pip install 'openenv-gym[envpool]'")
    require_module("ale_py", family="ale", install="pip install 'openenv-gym[ale]'")
    args = [
        "--vector-entry-point",
        "Acrobot-v1=envpool:Acrobot-v1",
        "--vector-entry-point",
        f"{COUNTING_ID}={FACTORY}",
        "--env-kwargs-allow",
        "max_num_frames_per_episode",
        "--set-attr-allow",
        "tag",
    ]
    specs = [ENVPOOL_CARTPOLE, PONG, COUNTING_CLASS]
    with LocalProvider(specs, num_servers=2, extra_args=args) as provider:
        yield provider


@pytest.fixture
def remote(engine_servers: LocalProvider) -> Iterator[Callable[..., RemoteVectorEnv]]:
    built: list[RemoteVectorEnv] = []

    def make(env_id: str, num_envs: int, shards: int = 1, **kwargs: Any) -> RemoteVectorEnv:
        kwargs.setdefault("server_vectorization", NATIVE)
        env = RemoteVectorEnv(env_id, num_envs, urls=engine_servers.urls[:shards], **kwargs)
        built.append(env)
        return env

    yield make
    for env in built:
        env.close()


def _envpool(task: str, num_envs: int, seed: int) -> Any:
    envpool = require_module("envpool", family="envpool", install="pip install envpool")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # envpool's float32 Box bounds
        return envpool.make_gymnasium(task, num_envs=num_envs, seed=seed)


def _atari(num_envs: int, **kwargs: Any) -> VectorEnv[Any, Any, Any]:
    require_module("ale_py", family="ale", install="pip install ale-py")
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv("pong", num_envs, **kwargs)


def _masked(info: dict[str, Any]) -> dict[str, Any]:
    """envpool's info in gymnasium's vector form: a True ``_key`` mask beside every key."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = _masked(value)
        else:
            out[key], out[f"_{key}"] = value, np.ones(len(value), dtype=bool)
    return out


def _sizes(num_envs: int, shards: int) -> list[int]:
    return [num_envs // shards + (k < num_envs % shards) for k in range(shards)]


@pytest.mark.parametrize("shards", [1, 2])
def test_native_engines_envpool_equals_make_gymnasium(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame, shards: int
) -> None:
    env = remote(ENVPOOL_CARTPOLE, 7, shards=shards)
    assert env.autoreset_mode is AutoresetMode.NEXT_STEP
    sizes = _sizes(7, shards)
    starts = np.cumsum([0, *sizes])[:-1]
    pools = [_envpool("CartPole-v1", n, 5 + int(s)) for n, s in zip(sizes, starts, strict=True)]
    obs, infos = env.reset(seed=5)
    wants = [pool.reset() for pool in pools]
    assert_same(obs, np.concatenate([w[0] for w in wants]), "reset obs")
    if shards == 1:
        assert_same(infos, _masked(wants[0][1]), "reset infos")
    rng = np.random.default_rng(0)
    ended = 0
    for step in range(120):
        actions = rng.integers(0, 2, size=7)
        got = env.step(actions)
        parts = [p.step(actions[s : s + n]) for p, s, n in zip(pools, starts, sizes, strict=True)]
        for index, name in enumerate(("obs", "rewards", "terminated", "truncated")):
            assert_same(got[index], np.concatenate([w[index] for w in parts]), f"{step} {name}")
        for key in ("elapsed_step", "env_id"):  # each shard's envs are its engine's 0..n-1
            assert_same(got[4][key], np.concatenate([w[4][key] for w in parts]), f"{step} {key}")
            assert got[4][f"_{key}"].all()
        if shards == 1:
            assert_same(got[4], _masked(parts[0][4]), f"step {step} infos")
        ended += int(np.sum(got[2] | got[3]))
    assert ended > 7  # autoresets happened, envpool's NEXT_STEP ones


def test_native_engines_envpool_partial_reset_and_attrs(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame
) -> None:
    env = remote(ENVPOOL_CARTPOLE, 4)
    pool = _envpool("CartPole-v1", 4, 2)
    last, _ = env.reset(seed=2)
    pool.reset()
    actions = np.array([0, 1, 1, 0])
    for _ in range(3):
        last = env.step(actions)[0]
        pool.step(actions)
    mask = np.array([True, False, True, False])
    obs, infos = env.reset(options={"reset_mask": mask})
    want_rows, want_info = pool.reset(options={"reset_mask": mask})
    expected = last.copy()
    expected[mask] = want_rows
    assert_same(obs, expected, "partial reset obs")
    assert_same(infos["_elapsed_step"], mask, "partial reset mask")
    assert_same(infos["env_id"][mask], want_info["env_id"], "partial reset env ids")
    got = env.step(actions)
    assert_same(got[0], pool.step(actions)[0], "step after the partial reset")
    assert env.get_attr("config")["max_episode_steps"] == 500
    env.set_attr("tag", 3)
    assert env.get_attr("tag") == 3 and env.call("tag") == 3
    with pytest.raises(AutoresetModeMismatchError, match=r"'NextStep'.*'SameStep'"):
        remote(ENVPOOL_CARTPOLE, 2, autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(VectorizationError, match=r"native vector env only"):
        remote(ENVPOOL_CARTPOLE, 2, server_vectorization="sync")


def test_native_engines_operator_vector_entry_point_for_an_id(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame
) -> None:
    native = remote("Acrobot-v1", 3)  # the operator's engine: envpool's Acrobot
    pool = _envpool("Acrobot-v1", 3, 9)
    assert_same(native.reset(seed=9)[0], pool.reset()[0], "reset obs")
    actions = np.array([0, 1, 2])
    assert_same(native.step(actions)[0], pool.step(actions)[0], "step obs")
    sync = remote("Acrobot-v1", 3, server_vectorization="sync")  # the id itself, still
    single = gymnasium.make_vec("Acrobot-v1", 3, vectorization_mode="sync")
    assert_same(sync.reset(seed=9)[0], single.reset(seed=9)[0], "sync reset obs")
    single.close()


@pytest.mark.parametrize(
    ("mode", "shards"),
    [(AutoresetMode.NEXT_STEP, 1), (AutoresetMode.SAME_STEP, 1), (AutoresetMode.SAME_STEP, 2)],
)
def test_native_engines_ale_equals_atari_vector_env(
    remote: Callable[..., RemoteVectorEnv],
    assert_same: AssertSame,
    mode: AutoresetMode,
    shards: int,
) -> None:
    env = remote(PONG, 4, shards=shards, autoreset_mode=mode, **SHORT_PONG)
    assert env.autoreset_mode is mode
    assert env.single_observation_space.shape == (4, 84, 84)
    engines = [_atari(2 if shards == 2 else 4, autoreset_mode=mode, **SHORT_PONG)]
    if shards == 2:
        engines.append(_atari(2, autoreset_mode=mode, **SHORT_PONG))
    starts = [0, 2][:shards]
    obs, _ = env.reset(seed=1)
    want = [e.reset(seed=1 + s)[0] for e, s in zip(engines, starts, strict=True)]
    assert_same(obs, np.concatenate(want), "reset obs")
    rng = np.random.default_rng(1)
    ended = 0
    for step in range(40):
        actions = rng.integers(0, 6, size=4)
        got = env.step(actions)
        size = 4 // shards
        parts = [e.step(actions[s : s + size]) for e, s in zip(engines, starts, strict=True)]
        for index, name in enumerate(("obs", "rewards", "terminated", "truncated")):
            assert_same(got[index], np.concatenate([w[index] for w in parts]), f"{step} {name}")
        if shards == 1:
            assert_same(got[4], parts[0][4], f"step {step} infos")
        else:
            for k, part in enumerate(parts):
                for key, value in part[4].items():
                    assert_same(got[4][key][k * size : (k + 1) * size], value, f"{step} {key}")
        ended += int(np.sum(got[2] | got[3]))
    assert ended >= 4  # every env's short episode ended, autoreset in the engine's mode
    if mode is AutoresetMode.SAME_STEP and shards == 1:
        mask = np.array([False, True, False, True])
        got_obs, _ = env.reset(options={"reset_mask": mask})
        assert_same(got_obs, engines[0].reset(options={"reset_mask": mask})[0], "partial reset")
    for engine in engines:
        engine.close()


def test_native_engines_ale_refuses_a_mode_it_lacks_and_has_no_render(
    remote: Callable[..., RemoteVectorEnv],
) -> None:
    with pytest.raises(AutoresetModeMismatchError, match=r"'NextStep'.*'Disabled'"):
        remote(PONG, 2, autoreset_mode=AutoresetMode.DISABLED)
    env = remote(PONG, 2)
    assert env.autoreset_mode is AutoresetMode.NEXT_STEP  # what AtariVectorEnv declares
    assert env.get_attr("num_envs") == 2
    with pytest.raises(NotImplementedError):
        env.render()


@pytest.mark.parametrize("env_id", [COUNTING_CLASS, COUNTING_ID])
def test_native_engines_module_attr_class_and_factory(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame, env_id: str
) -> None:
    env = remote(env_id, 4)
    assert env.autoreset_mode is AutoresetMode.SAME_STEP
    engine = CountingSameStepVectorEnv(4)
    assert_same(env.reset(seed=4)[0], engine.reset(seed=4)[0], "reset obs")
    for step in range(12):
        actions = np.arange(4) % 2
        got, want = env.step(actions), engine.step(actions)
        for index in range(5):
            assert_same(got[index], want[index], f"step {step} [{index}]")
    if env_id == COUNTING_CLASS:
        with pytest.raises(VectorizationError, match=r"native vector env only"):
            remote(env_id, 2, server_vectorization="sync")


def test_native_engines_through_make_vec(engine_servers: LocalProvider) -> None:
    env = gymnasium.make_vec(
        "openenv/Remote-v0",
        3,
        vectorization_mode=NATIVE,
        env_id=ENVPOOL_CARTPOLE,
        server_vectorization=NATIVE,
        urls=engine_servers.urls[:1],
    )
    try:
        assert isinstance(env.unwrapped, RemoteVectorEnv)
        pool = _envpool("CartPole-v1", 3, 4)
        np.testing.assert_array_equal(env.reset(seed=4)[0], pool.reset()[0], strict=True)
    finally:
        env.close()


def test_native_engines_envpool_partial_reset_of_envs_on_one_shard(
    remote: Callable[..., RemoteVectorEnv], assert_same: AssertSame
) -> None:
    # envpool refuses a mask selecting no env; shard 1's slice of this one selects none.
    env = remote(ENVPOOL_CARTPOLE, 4, shards=2)
    pools = [_envpool("CartPole-v1", 2, 3), _envpool("CartPole-v1", 2, 5)]
    env.reset(seed=3)
    for pool in pools:
        pool.reset()
    actions = np.array([0, 1, 1, 0])
    for _ in range(3):
        last = env.step(actions)[0]
        for start, pool in zip((0, 2), pools, strict=True):
            pool.step(actions[start : start + 2])
    mask = np.array([False, True, False, False])
    obs, infos = env.reset(options={"reset_mask": mask})
    want_rows, _ = pools[0].reset(options={"reset_mask": mask[:2]})
    expected = last.copy()
    expected[1] = want_rows[0]
    assert_same(obs, expected, "partial reset obs: shard 1 keeps its observations")
    assert_same(infos["_elapsed_step"], mask, "partial reset mask")
    got = env.step(actions)[0]
    pairs = zip((0, 2), pools, strict=True)
    want = [pool.step(actions[start : start + 2])[0] for start, pool in pairs]
    assert_same(got, np.concatenate(want), "step after the partial reset")


def test_native_engines_envpool_adapter_resets_no_env_for_an_all_false_mask() -> None:
    require_module("envpool", family="envpool", install="pip install 'openenv-gym[envpool]'")
    from openenv_gym.server.engines.envpool import EnvpoolVectorEnv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # envpool's float32 Box bounds
        engine, twin = EnvpoolVectorEnv("CartPole-v1", 3), EnvpoolVectorEnv("CartPole-v1", 3)
    try:
        actions = np.array([1, 0, 1])
        for pool in (engine, twin):
            pool.reset(seed=1)
            last = pool.step(actions)[0]
        obs, infos = engine.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
        assert np.array_equal(obs, last) and infos == {}
        # Nothing was reset: the next step equals the twin's, which had no such reset.
        assert np.array_equal(engine.step(actions)[0], twin.step(actions)[0])
    finally:
        engine.close()
        twin.close()
