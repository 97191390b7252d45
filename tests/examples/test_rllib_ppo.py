"""CI-sized run of examples/rllib_ppo.py on a two-node Ray cluster: 2 PPO iterations."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from openenv_gym.testing.optional import require_module

INSTALL = "pip install 'openenv-gym[rllib]' torch==2.13.0"
ray = require_module("ray", family="ray", install=INSTALL)
require_module("torch", family="torch", install=INSTALL)
for _module in ("tree", "scipy", "tensorboardX", "ormsgpack", "lz4"):  # RLlib's own imports
    require_module(_module, family="rllib", install=INSTALL)

from ray.cluster_utils import Cluster
from ray.util.state import list_actors

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rllib_ppo.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rllib_ppo_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two nodes of two CPUs: room for two EnvRunners and their four servers."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": True}
    )
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _servers_alive() -> int:
    filters = [("class_name", "=", "OpenEnvGymServer"), ("state", "=", "ALIVE")]
    return len(list_actors(filters=filters))


@pytest.mark.slow
def test_rllib_ppo_env_runners_sample_from_ray_actor_servers(cluster: Cluster) -> None:
    args = ["--iterations", "2", "--env-runners", "2", "--envs-per-runner", "4"]
    args += ["--servers-per-runner", "2", "--cpus-per-server", "0.25", "--batch-size", "512"]
    summary = _load_example().main([*args, "--quiet"])
    assert summary["iterations"] == 2, summary
    # Each EnvRunner's RemoteVectorEnv had two server actors, SPREAD over both nodes.
    nodes = summary["server_nodes"]
    assert len(nodes) == 4 and len(set(nodes)) == 2, summary
    assert summary["env_steps"] >= 2 * 512, summary
    assert summary["episodes"] >= 10, summary  # CartPole episodes under a near-random policy
    assert all(8 <= value <= 500 for value in summary["returns"]), summary
    deadline = time.monotonic() + 30.0
    while _servers_alive():  # algo.stop() closed the EnvRunners' envs and so their servers
        assert time.monotonic() < deadline, "env-server actors outlived algo.stop()"
        time.sleep(0.1)
