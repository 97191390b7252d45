"""DockerProvider and the server image against a real Docker engine.

Skipped without an engine, with the reason; CI sets OPENENV_GYM_REQUIRE_ALL=1, which turns
that skip into a failure. The image is built offline by `.ci/run` (or by the fixture if absent).
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import textwrap
import urllib.parse

import gymnasium
import numpy as np
import pytest

import openenv_gym
from openenv_gym.errors import AuthenticationError, ConnectionLostError, ServerStartError

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image(docker_image: str) -> str:
    return docker_image


def test_docker_vector_env_matches_sync_vector_env(image: str, containers_before: None) -> None:
    remote = openenv_gym.RemoteVectorEnv("CartPole-v1", 64, docker_image=image, num_servers=2)
    local = gymnasium.make_vec("CartPole-v1", 64, vectorization_mode="sync")
    try:
        assert len(set(remote.urls)) == 2
        np.testing.assert_array_equal(remote.reset(seed=7)[0], local.reset(seed=7)[0])
        rng = np.random.default_rng(0)
        for _ in range(300):
            actions = rng.integers(0, 2, 64)
            for a, b in zip(remote.step(actions)[:4], local.step(actions)[:4], strict=True):
                np.testing.assert_array_equal(a, b)
                assert a.dtype == b.dtype
    finally:
        remote.close()
        local.close()


def test_docker_make_single_env(image: str, containers_before: None) -> None:
    env = gymnasium.make("openenv/FrozenLake-v1", docker_image=image)
    try:
        local = gymnasium.make("FrozenLake-v1")
        assert env.reset(seed=3) == local.reset(seed=3)
        assert env.step(2) == local.step(2)
    finally:
        env.close()


def test_docker_containers_are_confined_with_healthcheck(
    image: str, docker_client: object, containers_before: None
) -> None:
    from openenv_gym.providers.docker import ISOLATED_NETWORK, SANDBOX_CAPS, DockerProvider

    with DockerProvider(["CartPole-v1"], image=image, cpus=1, memory="512m", pids=64) as provider:
        container = docker_client.containers.get(provider.container_ids[0])  # type: ignore[attr-defined]
        host = container.attrs["HostConfig"]
        assert container.attrs["Config"]["User"] == "root"  # to run episodes as their own uids
        assert host["CapDrop"] == ["ALL"] and sorted(host["CapAdd"]) == sorted(SANDBOX_CAPS)
        assert host["SecurityOpt"] == ["no-new-privileges"] and host["Init"] is True
        assert (host["NanoCpus"], host["PidsLimit"]) == (1_000_000_000, 64)
        assert host["Memory"] == host["MemorySwap"] == 512 * 1024 * 1024
        assert host["NetworkMode"] == ISOLATED_NETWORK
        network = docker_client.networks.get(ISOLATED_NETWORK)  # type: ignore[attr-defined]
        options = network.attrs["Options"]
        assert options["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert options["com.docker.network.bridge.enable_icc"] == "false"
        assert not network.attrs["Internal"]  # internal networks publish no ports
        assert "/healthz" in " ".join(container.attrs["Config"]["Healthcheck"]["Test"])
        bindings = container.attrs["NetworkSettings"]["Ports"]["8765/tcp"]
        assert bindings[0]["HostIp"] == "127.0.0.1"
        parts = urllib.parse.urlparse(provider.urls[0])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        with pytest.raises(AuthenticationError, match="HTTP 401"):  # a token of its own
            openenv_gym.RemoteEnv("CartPole-v1", url=provider.urls[0])
        url, token = provider.urls[0], provider.token
        with openenv_gym.RemoteEnv("CartPole-v1", url=url, token=token) as env:
            assert env.reset(seed=0)[0].shape == (4,)


def test_docker_default_limits_and_asked_for_network(
    image: str, docker_client: object, containers_before: None
) -> None:
    from openenv_gym.providers import docker as provider_module
    from openenv_gym.providers.docker import DockerProvider

    with DockerProvider(["CartPole-v1"], image=image, network="bridge") as provider:
        container = docker_client.containers.get(provider.container_ids[0])  # type: ignore[attr-defined]
        host = container.attrs["HostConfig"]
        assert host["PidsLimit"] == provider_module.DEFAULT_PIDS
        assert host["NanoCpus"] == int(provider_module.DEFAULT_CPUS * 1e9)
        assert host["Memory"] == 2 * 1024**3 and host["NetworkMode"] == "bridge"
    with pytest.raises(ValueError, match="not 'none'"):
        DockerProvider(["CartPole-v1"], image=image, network="none")


def test_docker_killed_container_is_a_typed_error_naming_its_endpoint(
    image: str, docker_client: object, containers_before: None
) -> None:
    from openenv_gym.providers.docker import DockerProvider

    with DockerProvider(["CartPole-v1"], image=image, num_servers=2) as provider:
        envs = openenv_gym.RemoteVectorEnv(
            "CartPole-v1", 8, urls=provider.urls, token=provider.token, call_timeout=10
        )
        envs.reset(seed=0)
        victim = docker_client.containers.get(provider.container_ids[1])  # type: ignore[attr-defined]
        victim.kill()
        with pytest.raises(ConnectionLostError, match=provider.urls[1]):
            for _ in range(20):
                envs.step(np.zeros(8, dtype=np.int64))
        envs.close()


def test_docker_failing_container_reports_its_logs(image: str, containers_before: None) -> None:
    from openenv_gym.providers.docker import DockerProvider

    with pytest.raises(ServerStartError, match="cannot host 'NoSuchEnv-v0'"):
        DockerProvider(["NoSuchEnv-v0"], image=image, startup_timeout=30)


def test_docker_missing_image_is_a_clear_error(docker_client: object) -> None:
    from openenv_gym.providers.docker import DockerProvider

    with pytest.raises(ServerStartError, match="openenv-gym docker build"):
        DockerProvider(["CartPole-v1"], image="openenv-gym-no-such-image:never")


def test_docker_prune_removes_containers_of_a_killed_client(image: str) -> None:
    from openenv_gym.providers.docker import list_containers, prune

    script = textwrap.dedent(
        f"""
        import sys
        from openenv_gym.providers.docker import DockerProvider
        provider = DockerProvider(["CartPole-v1"], image={image!r})
        print(provider.container_ids[0], flush=True)
        sys.stdin.read()
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    container_id = owner.stdout.readline().strip()
    os.kill(owner.pid, signal.SIGKILL)  # no atexit: the container is orphaned
    owner.wait(timeout=10)
    assert container_id in {c.id for c in list_containers()}
    prune()
    assert container_id not in {c.id for c in list_containers()}


def test_docker_openenv_image_driven_through_gymnasium(image: str, containers_before: None) -> None:
    # Our image also speaks OpenEnv's protocol on its port: it stands in for an OpenEnv image.
    from openenv_gym.interop.openenv.env import OpenEnvEnv

    env = OpenEnvEnv.from_docker_image(image, port=8765, command=["CartPole-v1"])
    try:
        local = gymnasium.make("CartPole-v1")
        obs, _ = env.reset(seed=4)
        expected, _ = local.reset(seed=4)
        np.testing.assert_array_equal(obs["observation"], expected.astype(np.float64))
        _, reward, done, truncated, _ = env.step({"action": 1})
        assert reward == 1.0 and done is False and truncated is False
    finally:
        env.close()


def test_docker_openenv_image_as_a_vector_env(image: str, containers_before: None) -> None:
    from openenv_gym.interop.openenv.vector_env import OpenEnvVectorEnv

    envs = OpenEnvVectorEnv.from_docker_image(
        image, 4, num_servers=2, port=8765, command=["CartPole-v1"]
    )
    local = gymnasium.make_vec("CartPole-v1", 4, vectorization_mode="sync")
    try:
        assert len(set(envs._provider.urls)) == 2  # two containers, sessions round-robin
        obs, _ = envs.reset(seed=2)
        np.testing.assert_array_equal(obs["observation"], local.reset(seed=2)[0].astype(np.float64))
        actions = np.array([1, 0, 1, 0])
        obs, rewards, *_ = envs.step({"action": actions})
        np.testing.assert_array_equal(obs["observation"], local.step(actions)[0].astype(np.float64))
        np.testing.assert_array_equal(rewards, np.ones(4))
    finally:
        envs.close()
        local.close()
