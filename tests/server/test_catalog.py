"""The operator's hosting policy: what a client may build, pass, set, read and call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium
import pytest

from openenv_gym.client.connection import Connection
from openenv_gym.errors import (
    AttributeNotAllowedError,
    KwargNotAllowedError,
    RemoteError,
    UnknownEnvError,
)
from openenv_gym.protocol.messages import Op
from openenv_gym.providers.local import LocalProvider
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.hosting import HostedSpec, HostingPolicy, load_hosting_file

DICT_TUPLE = "openenv_gym.testing.envs:DictTupleEnv"


def _factory_env(**kwargs: Any) -> gymnasium.Env[Any, Any]:
    return gymnasium.make("CartPole-v1")


@pytest.fixture
def function_entry_point_id() -> Iterator[str]:
    env_id = "TestFactoryOnly-v0"
    gymnasium.register(env_id, entry_point=_factory_env)
    yield env_id
    del gymnasium.registry[env_id]


def test_catalog_allow_any_id_hosts_plain_installed_env_classes() -> None:
    catalog = EnvCatalog([], allow_any_id=True)
    assert catalog.lookup("CartPole-v1").id == "CartPole-v1"
    assert catalog.lookup("FrozenLake-v1").id == "FrozenLake-v1"


@pytest.mark.parametrize(
    "env_id", ["openenv/CartPole-v1", "openenv/Remote-v0", "openenv-phys2d/CartPole-v0"]
)
def test_catalog_allow_any_id_never_hosts_openenv_ids(env_id: str) -> None:
    import openenv_gym  # noqa: F401 - registers the openenv/<id> ids this test refuses

    catalog = EnvCatalog([], allow_any_id=True)
    with pytest.raises(UnknownEnvError, match="not hosted here"):
        catalog.hosted(env_id)


def test_catalog_allow_any_id_refuses_factory_functions(function_entry_point_id: str) -> None:
    catalog = EnvCatalog([], allow_any_id=True)
    with pytest.raises(UnknownEnvError, match=function_entry_point_id):
        catalog.hosted(function_entry_point_id)
    # Named by the operator, the same id is hosted.
    assert EnvCatalog([function_entry_point_id]).lookup(function_entry_point_id)


def test_catalog_unknown_kwarg_is_a_type_error_naming_it_and_the_allowed_set() -> None:
    hosted = EnvCatalog(["CartPole-v1"]).hosted("CartPole-v1")
    with pytest.raises(TypeError) as raised:
        hosted.factory({"frameskip": 4})
    assert isinstance(raised.value, KwargNotAllowedError)
    text = str(raised.value)
    assert "unexpected keyword argument 'frameskip'" in text  # what TorchRL's retry matches
    assert (
        "allowed: disable_env_checker, max_episode_steps, render_mode, sutton_barto_reward" in text
    )


def test_catalog_scalar_constructor_kwargs_are_type_checked() -> None:
    hosted = EnvCatalog(["CartPole-v1"]).hosted("CartPole-v1")
    env = hosted.factory({"sutton_barto_reward": True, "max_episode_steps": 7})()
    try:
        assert env.unwrapped._sutton_barto_reward is True  # type: ignore[attr-defined]
        assert env.spec is not None and env.spec.max_episode_steps == 7
    finally:
        env.close()
    with pytest.raises(KwargNotAllowedError, match="expected a bool, got int"):
        hosted.factory({"sutton_barto_reward": 1})
    with pytest.raises(KwargNotAllowedError, match="expected an int >= 1"):
        hosted.factory({"max_episode_steps": "1; rm -rf /"})


def test_catalog_entry_point_kwargs_need_the_operator() -> None:
    refused = EnvCatalog([DICT_TUPLE]).hosted(DICT_TUPLE)
    with pytest.raises(KwargNotAllowedError, match="'max_length'"):
        refused.factory({"max_length": 3})
    allowed = EnvCatalog([DICT_TUPLE], policy=HostingPolicy(allow_kwargs=frozenset({"max_length"})))
    env = allowed.factory(DICT_TUPLE, {"max_length": 3})()
    try:
        assert env.unwrapped.max_length == 3  # type: ignore[attr-defined]
    finally:
        env.close()


def test_catalog_fixed_kwargs_cannot_be_changed_by_a_client() -> None:
    policy = HostingPolicy(kwargs={"max_length": 3})
    catalog = EnvCatalog([HostedSpec(DICT_TUPLE, policy)])
    hosted = catalog.hosted(DICT_TUPLE)
    assert "max_length" not in hosted.allowed_kwargs
    with pytest.raises(KwargNotAllowedError, match="fixed by the operator"):
        hosted.factory({"max_length": 100})
    for kwargs in ({}, {"max_length": 3}):  # restating the fixed value changes nothing
        env = hosted.factory(kwargs)()
        try:
            assert env.unwrapped.max_length == 3  # type: ignore[attr-defined]
        finally:
            env.close()


def test_catalog_render_modes_exclude_human_and_list_modes_by_default() -> None:
    hosted = EnvCatalog(["CartPole-v1"]).hosted("CartPole-v1")
    assert hosted.render_modes == {"rgb_array"}
    for mode in ("human", "rgb_array_list"):
        with pytest.raises(KwargNotAllowedError, match=f"render mode '{mode}' not in rgb_array"):
            hosted.factory({"render_mode": mode})
    listed = EnvCatalog(
        ["CartPole-v1"], policy=HostingPolicy(render_modes=frozenset({"rgb_array_list"}))
    )
    listed.factory("CartPole-v1", {"render_mode": "rgb_array_list"})().close()


def test_catalog_set_attr_only_on_names_the_operator_allows() -> None:
    hosted = EnvCatalog(["CartPole-v1"]).hosted("CartPole-v1")
    with pytest.raises(AttributeNotAllowedError, match="may not set 'gravity'; allowed: none"):
        hosted.check_set_attr("gravity")
    allowing = EnvCatalog(["CartPole-v1"], policy=HostingPolicy(set_attrs=frozenset({"gravity"})))
    allowing.hosted("CartPole-v1").check_set_attr("gravity")
    with pytest.raises(AttributeNotAllowedError, match="'timeout'; allowed: gravity"):
        allowing.hosted("CartPole-v1").check_set_attr("timeout")


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("set_wrapper_attr", ["timeout", 1e6]),
        ("__setattr__", ["timeout", 1e6]),
        ("_run", []),
        ("close", []),
        ("get_wrapper_attr", ["_np_random"]),
    ],
)
def test_catalog_call_refuses_private_and_policy_bypassing_methods(
    name: str, args: list[Any]
) -> None:
    hosted = EnvCatalog(["CartPole-v1"]).hosted("CartPole-v1")
    with pytest.raises(AttributeNotAllowedError):
        hosted.check_call(name, args)


def test_hosting_file_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "hosting.toml"
    toml.write_text(
        f"""
[[env]]
spec = "{DICT_TUPLE}"
allow_kwargs = ["render_mode"]
set_attrs = ["max_length"]
kwargs = {{ max_length = 5 }}
"""
    )
    (entry,) = load_hosting_file(toml)
    assert entry.spec == DICT_TUPLE
    assert entry.policy.kwargs == {"max_length": 5}
    assert entry.policy.set_attrs == {"max_length"}
    as_json = tmp_path / "hosting.json"
    as_json.write_text(json.dumps({"env": [{"spec": "CartPole-v1", "render_modes": ["ansi"]}]}))
    (entry,) = load_hosting_file(as_json)
    assert entry.policy.render_modes == {"ansi"}


def test_hosting_file_errors_name_the_entry_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"env": [{"spec": "CartPole-v1", "allow_kwarg": ["x"]}]}))
    with pytest.raises(ValueError, match=r"env #1: unknown field\(s\) \['allow_kwarg'\]"):
        load_hosting_file(bad)
    bad.write_text(json.dumps({"env": [{"spec": "CartPole-v1", "set_attrs": "gravity"}]}))
    with pytest.raises(ValueError, match="set_attrs must be a list of names"):
        load_hosting_file(bad)


@pytest.fixture(scope="module")
def any_id_server() -> Iterator[str]:
    """A server started as the image's default command starts it: any gymnasium id."""
    with LocalProvider([], extra_args=["--allow-any-id"]) as provider:
        yield provider.urls[0]


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("openenv/Remote-v0", {"env_id": "os:system", "command": "touch {marker}"}),
        ("openenv/CartPole-v1", {"url": "ws://127.0.0.1:9", "token": "stolen"}),
        ("os:system", {"command": "touch {marker}"}),
    ],
)
def test_allow_any_id_server_runs_no_client_code(
    any_id_server: str, tmp_path: Path, env_id: str, kwargs: dict[str, str]
) -> None:
    marker = tmp_path / "ran"
    body = {k: v.format(marker=marker) for k, v in kwargs.items()}
    connection = Connection(any_id_server)
    try:
        with pytest.raises(RemoteError, match="not hosted here") as raised:
            connection.request(Op.MAKE, {"env_id": env_id, "num_envs": 1, "kwargs": body})
        assert isinstance(raised.value, LookupError)
    finally:
        connection.close()
    assert not marker.exists()


def test_allow_any_id_server_refuses_safety_kwargs_over_the_wire(any_id_server: str) -> None:
    import openenv_gym

    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        openenv_gym.RemoteEnv("CartPole-v1", url=any_id_server, bogus=1)
    with openenv_gym.RemoteEnv("CartPole-v1", url=any_id_server) as env:
        with pytest.raises(AttributeError, match="may not set 'gravity'"):
            env.set_attr("gravity", 100.0)
        assert env.get_attr("gravity") == pytest.approx(9.8)
