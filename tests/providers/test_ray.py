"""RayProvider on a real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest

from openenv_gym.testing.optional import require_module

ray = require_module("ray", family="ray", install="pip install 'openenv-gym[ray]'")

from ray.cluster_utils import Cluster
from ray.util.state import list_actors, list_placement_groups

from openenv_gym import RemoteVectorEnv
from openenv_gym.providers.ray import RayProvider

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two nodes of one CPU each, each with a resource of its own (and the state API)."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"node_a": 1}, "include_dashboard": True},
    )
    cluster.add_node(num_cpus=1, resources={"node_b": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _gone(pid: int) -> bool:
    try:
        status = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return status in ("Z", "X")


def _wait_for(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _ours_alive() -> list[Any]:
    return [
        actor
        for actor in list_actors(filters=[("state", "=", "ALIVE")])
        if "OpenEnvGymServer" in actor.class_name
    ]


def _assert_nothing_left(provider: RayProvider, pids: list[int], group_id: str) -> None:
    _wait_for(lambda: not _ours_alive(), "the server actors to die")
    groups = list_placement_groups(filters=[("placement_group_id", "=", group_id)])
    assert [group.state for group in groups] == ["REMOVED"]
    _wait_for(lambda: all(_gone(pid) for pid in pids), f"server processes {pids} to exit")
    assert provider.placement_group_id is None


def test_ray_provider_spreads_servers_over_nodes_and_cleans_up(cluster: Cluster) -> None:
    provider = RayProvider(["CartPole-v1"], num_servers=2)
    try:
        assert len(set(provider.node_ids)) == 2  # SPREAD over the two one-CPU nodes
        assert all(url.startswith("ws://127.0.0.1:") for url in provider.urls)
        assert provider.token and not provider.allow_insecure_token
        nodes = {node["NodeID"]: node["Resources"] for node in ray.nodes() if node["Alive"]}
        used = {name for node in provider.node_ids for name in nodes[node] if "node_" in name}
        assert used == {"node_a", "node_b"}
        pids, group_id = provider.pids, provider.placement_group_id
        assert group_id is not None
    finally:
        provider.close()
    _assert_nothing_left(provider, pids, group_id)
    provider.close()  # idempotent


def test_ray_remote_vector_env_equals_sync_vector_env(cluster: Cluster) -> None:
    num_envs, steps = 8, 150
    remote = RemoteVectorEnv("CartPole-v1", num_envs, provider="ray", num_servers=2)
    local = gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("CartPole-v1") for _ in range(num_envs)]
    )
    try:
        obs_r, _ = remote.reset(seed=7)
        obs_l, _ = local.reset(seed=7)
        np.testing.assert_array_equal(obs_r, obs_l)
        local.action_space.seed(3)
        for _ in range(steps):
            action = local.action_space.sample()
            got, want = remote.step(action), local.step(action)
            for a, b in zip(got[:4], want[:4], strict=True):
                np.testing.assert_array_equal(a, b)
    finally:
        remote.close()
        local.close()
    _wait_for(lambda: not _ours_alive(), "the facade's server actors to die")


def test_ray_killed_server_is_replaced_under_reconnect(cluster: Cluster) -> None:
    provider = RayProvider(["CartPole-v1"], num_servers=2)
    try:
        env = RemoteVectorEnv("CartPole-v1", 4, provider=provider, reconnect=True)
        env.reset(seed=1)
        old_url, old_pid = provider.urls[0], provider.pids[0]
        ray.kill(provider.actors[0], no_restart=True)
        _wait_for(lambda: _gone(old_pid), "the killed actor's server to exit")
        _, _, terminated, truncated, infos = env.step(env.action_space.sample())
        assert truncated[:2].all() and not terminated[:2].any()
        assert infos["reconnected"][:2].all() and not infos["reconnected"][2:].any()
        assert provider.urls[0] != old_url
        for _ in range(20):
            env.step(env.action_space.sample())
        env.close()
        assert len(_ours_alive()) == 2  # a borrowed provider stays up after the env closes
        pids, group_id = provider.pids, provider.placement_group_id
        assert group_id is not None
    finally:
        provider.close()
    _assert_nothing_left(provider, pids, group_id)


def test_ray_gymnasium_make_single_env_on_an_actor(cluster: Cluster) -> None:
    remote = gymnasium.make("openenv/CartPole-v1", provider="ray")
    local = gymnasium.make("CartPole-v1")
    try:
        np.testing.assert_array_equal(remote.reset(seed=5)[0], local.reset(seed=5)[0])
        for action in [0, 1, 1, 0, 1] * 4:
            got, want = remote.step(action), local.step(action)
            np.testing.assert_array_equal(got[0], want[0])
            assert got[1:4] == want[1:4]
    finally:
        remote.close()
        local.close()
    _wait_for(lambda: not _ours_alive(), "the single env's server actor to die")


DRIVER = """
import os, sys, ray
from openenv_gym.providers.ray import RayProvider
ray.init(address=sys.argv[1], log_to_driver=False)
provider = RayProvider(["CartPole-v1"], num_servers=2)
print(provider.placement_group_id, *provider.pids, flush=True)
os.kill(os.getpid(), 9)
"""


def test_ray_driver_death_leaves_no_server(cluster: Cluster) -> None:
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, cluster.address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert driver.returncode == -9, driver.stderr[-2000:]
    group_id, *rest = driver.stdout.split()
    pids = [int(pid) for pid in rest]
    assert len(pids) == 2
    _wait_for(lambda: not _ours_alive(), "the dead driver's actors to die", timeout=40.0)

    def group_removed() -> bool:
        groups = list_placement_groups(filters=[("placement_group_id", "=", group_id)])
        return [group.state for group in groups] == ["REMOVED"]

    _wait_for(group_removed, "the dead driver's placement group to be removed", timeout=40.0)
    _wait_for(lambda: all(_gone(pid) for pid in pids), f"server processes {pids} to exit")


def test_ray_provider_module_imports_no_client_server_or_gymnasium() -> None:
    code = "import json, sys, openenv_gym.providers.ray, openenv_gym.providers.ray_deploy; "
    code += "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    families = ("openenv_gym.client", "openenv_gym.server", "gymnasium")
    loaded = [m for m in json.loads(out) if any(m == f or m.startswith(f"{f}.") for f in families)]
    assert not loaded, f"import openenv_gym.providers.ray(_deploy) loads {loaded}"


def test_ray_provider_joins_the_running_cluster_and_shares_its_connection(
    cluster: Cluster,
) -> None:
    # What a script gets that starts a cluster and no driver (a bare ray.init() would join the
    # latest cluster started on this machine): the providers join it rather than fail, share
    # that connection, and the last one to close disconnects.
    from ray._private.utils import write_ray_address

    from openenv_gym.ws.handshake import probe

    ray.shutdown()
    write_ray_address(cluster.gcs_address)  # ours, even if another cluster started since
    first = second = None
    try:
        first = RayProvider(["CartPole-v1"], num_servers=1)
        second = RayProvider(["CartPole-v1"], num_servers=1)
        assert ray.get_runtime_context().gcs_address == cluster.gcs_address
        first.close()
        assert ray.is_initialized()  # still in use by the second provider
        probe(second.urls[0], timeout=10.0, token=second.token)
        second.close()
        assert not ray.is_initialized()
    finally:
        for provider in (first, second):
            if provider is not None:
                provider.close()
        if not ray.is_initialized():
            ray.init(address=cluster.address, log_to_driver=False)
    _wait_for(lambda: not _ours_alive(), "the providers' server actors to die")


def test_ray_provider_bind_node_serves_on_the_node_address(cluster: Cluster) -> None:
    # For clients on other machines: the node's address even on the driver's machine, and the
    # facade sends the token there because its own provider placed the server.
    provider = RayProvider(["CartPole-v1"], num_servers=1, bind="node")
    try:
        (url,) = provider.urls
        assert not url.startswith("ws://127.0.0.1:") and provider.allow_insecure_token
        env = RemoteVectorEnv("CartPole-v1", 2, provider=provider)
        local = gymnasium.make_vec("CartPole-v1", 2, vectorization_mode="sync")
        np.testing.assert_array_equal(env.reset(seed=4)[0], local.reset(seed=4)[0])
        for action in ([0, 1], [1, 1], [1, 0]):
            np.testing.assert_array_equal(
                env.step(np.array(action))[0], local.step(np.array(action))[0]
            )
        env.close()
        local.close()
    finally:
        provider.close()


CUSTOM_ENV = '''
from gymnasium.envs.classic_control import CartPoleEnv


class ShippedCartPole(CartPoleEnv):
    """Importable only where the runtime env put this file."""
'''


def test_ray_provider_runtime_env_reaches_the_servers(cluster: Cluster, tmp_path: Any) -> None:
    # Env code that exists only where Ray's runtime env puts it (here: on PYTHONPATH).
    (tmp_path / "shipped_env_module.py").write_text(CUSTOM_ENV)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    spec = "shipped_env_module:ShippedCartPole"
    provider = RayProvider([spec], runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        env = RemoteVectorEnv(spec, 2, provider=provider)
        local = gymnasium.vector.SyncVectorEnv(
            [lambda: gymnasium.make("CartPole-v1").unwrapped for _ in range(2)]
        )
        np.testing.assert_array_equal(env.reset(seed=6)[0], local.reset(seed=6)[0])
        for action in ([1, 0], [0, 0], [1, 1]):
            got, want = env.step(np.array(action)), local.step(np.array(action))
            for a, b in zip(got[:4], want[:4], strict=True):
                np.testing.assert_array_equal(a, b)
        env.close()
        local.close()
    finally:
        provider.close()
