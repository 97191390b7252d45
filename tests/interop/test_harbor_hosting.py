"""Harbor tasks hosted by a server: remote equals in-process, MCP tools, nothing left behind."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openenv_gym import RemoteEnv
from openenv_gym.interop.harbor.container import live_task_containers
from openenv_gym.interop.harbor.env import HarborEnv
from openenv_gym.providers.docker import prune
from openenv_gym.providers.local import READY_PREFIX, LocalProvider
from openenv_gym.testing.compliance._support import free_port, wait_for, wait_listening
from openenv_gym.testing.harbor_tasks import TASKS_DIR

ENV_ID = "harbor:harbor_tasks"
TIMING = ("start_seconds", "verifier_seconds")


def _hosting(tmp_path: Path, kwargs: str) -> str:
    path = tmp_path / "hosting.toml"
    path.write_text(f'[[env]]\nspec = "harbor:{TASKS_DIR}"\nkwargs = {{ {kwargs} }}\n')
    return str(path)


def _gone(container: str) -> bool:
    return container not in {c.id for c in live_task_containers(all_owners=True)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Iterator[str]:
    hosting = _hosting(tmp_path_factory.mktemp("hosting"), "oracle = true")
    with LocalProvider([], extra_args=["--hosting", hosting]) as provider:
        yield provider.urls[0]


def _episode(env: Any, actions: list[str]) -> list[tuple[Any, ...]]:
    obs, info = env.reset(options={"task": "word-count"})
    steps: list[tuple[Any, ...]] = [(obs, {k: v for k, v in info.items() if k not in TIMING})]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        info = {k: v for k, v in info.items() if k not in TIMING}
        steps.append((obs, reward, terminated, truncated, info))
    return steps


def test_harbor_hosting_remote_episode_equals_in_process(server: str) -> None:
    actions = ["cat text.txt", "ls; exit 3", "oracle", "cat count.txt >&2", "submit"]
    with RemoteEnv(ENV_ID, url=server, call_timeout=120) as remote:
        got = _episode(remote, actions)
    with HarborEnv(TASKS_DIR, oracle=True) as local:
        want = _episode(local, actions)
    assert got == want
    assert [type(value) for value in got[-1]] == [type(value) for value in want[-1]]
    assert got[-1][1:4] == (1.0, True, False) and got[2][0]["exit_code"] == 3


def test_harbor_hosting_doing_nothing_scores_zero_and_close_removes_the_container(
    server: str,
) -> None:
    env: RemoteEnv[Any, Any] = RemoteEnv(ENV_ID, url=server, call_timeout=120)
    env.reset(options={"task": "hello-file"})
    container = env.call("state")["container"]
    assert env.step("submit")[1:3] == (0.0, True)
    env.close()
    assert wait_for(lambda: _gone(container), 20) is not None


def test_harbor_hosting_a_client_that_dies_leaves_no_container(server: str) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from openenv_gym import RemoteEnv
        env = RemoteEnv({ENV_ID!r}, url={server!r}, call_timeout=120)
        env.reset(options={{"task": "hello-file"}})
        print(env.call("state")["container"], flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    container = done.stdout.strip()
    assert done.returncode == -signal.SIGKILL and container, done.stderr
    assert wait_for(lambda: _gone(container), 30) is not None


def test_harbor_hosting_server_stop_and_kill_leave_no_container(
    tmp_path: Path, docker_image: str
) -> None:
    hosting = _hosting(tmp_path, "max_steps = 4")
    with LocalProvider([], extra_args=["--hosting", hosting]) as provider:
        env: RemoteEnv[Any, Any] = RemoteEnv(ENV_ID, url=provider.urls[0], call_timeout=120)
        env.reset(options={"task": "hello-file"})
        container = env.call("state")["container"]
    assert wait_for(lambda: _gone(container), 30) is not None  # SIGTERM: sessions closed
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openenv_gym",
            "serve",
            "--hosting",
            hosting,
            "--port",
            "0",
            "--announce",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip().removeprefix(READY_PREFIX)
        env = RemoteEnv(ENV_ID, url=url, call_timeout=120)
        env.reset(options={"task": "hello-file"})
        container = env.call("state")["container"]
        server.send_signal(signal.SIGKILL)  # no cleanup can run: the owner label tells prune
        server.wait(30)
        assert not _gone(container)
        assert container[:12] in prune()
        assert _gone(container)
    finally:
        server.kill()
        server.wait(30)


def test_harbor_hosting_mcp_production_mode_serves_run_and_submit(
    tmp_path: Path, docker_image: str
) -> None:
    from openenv_gym.testing.optional import require_module

    require_module("mcp", family="mcp", install="pip install 'openenv-gym[mcp]'")
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    hosting = _hosting(tmp_path, 'task = "hello-file"')
    args = ["--hosting", hosting, "--mcp-port", str(port), "--mcp-mode", "production"]
    args += ["--mcp-tool-timeout", "120"]

    async def session() -> tuple[set[str], Any, Any]:
        async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp")) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            ran = await client.call_tool(
                "run", {"command": "echo 'Hello, world!' > hello.txt; pwd"}
            )
            graded = await client.call_tool("submit", {})
            return names, ran.structured_content, graded.structured_content

    with LocalProvider([], extra_args=args):
        wait_listening(port, 30)
        before = {c.id for c in live_task_containers(all_owners=True)}
        names, ran, graded = asyncio.run(session())
    assert names == {"run", "submit"}  # no reset, no oracle, no sandbox calls for the agent
    assert (ran["stdout"], ran["reward"]) == ("/app\n", 0.0)
    assert (graded["reward"], graded["terminated"], graded["rewards"]) == (
        1.0,
        True,
        {"reward": 1.0},
    )
    assert wait_for(lambda: not before & {c.id for c in live_task_containers(all_owners=True)}, 30)
