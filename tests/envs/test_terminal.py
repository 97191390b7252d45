"""TerminalEnv: the container guard, the built-in tasks solved in-process, and in Docker.

In-process tests pass allow_outside_container=True: their commands run on this machine, in
sandboxes (tests/envs/test_sandbox.py attacks them). The Docker tests are skipped without an
engine, with the reason; OPENENV_GYM_REQUIRE_ALL=1 turns that skip into a failure (as in
tests/providers).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env

import openenv_gym
from openenv_gym.envs import Task, TaskSet, is_tool, terminal, tools
from openenv_gym.envs.terminal import ALLOW_ENV_VAR, TerminalEnv, in_container

SPEC = "openenv_gym.envs.terminal:TerminalEnv"

SOLUTIONS: dict[str, list[str]] = {
    "hello-file": ["echo 'Hello, terminal!' > hello.txt"],
    "count-lines": ["wc -l < data.txt > count.txt"],
    "find-error": ["grep -rl ERROR logs > answer.txt"],
    "sum-numbers": ['s=0; while read n; do s=$((s + n)); done < numbers.txt; echo "$s" > sum.txt'],
    "decode-message": ["base64 -d message.b64"],
    "make-tree": [
        "mkdir -p project/src",
        ": > project/src/__init__.py",
        "echo 'Built with openenv.' > project/README.md",
    ],
    "edit-config": ["sed -i 's/^debug = false$/debug = true/' config.ini"],
    "sort-unique": ["sort -u names.txt > unique.txt"],
}
"""Known-good command sequences: the last command of each solves its task."""


@pytest.fixture
def env() -> Iterator[TerminalEnv]:
    env = TerminalEnv(allow_outside_container=True)
    yield env
    env.close()


# -- the container guard ---------------------------------------------------------------------


def test_refuses_outside_a_container_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine may carry a container marker (/.dockerenv): take the detection's word out.
    monkeypatch.setattr(terminal, "in_container", lambda: False)
    monkeypatch.delenv(ALLOW_ENV_VAR, raising=False)
    with pytest.raises(PermissionError, match="refuses to start outside a container"):
        TerminalEnv()
    TerminalEnv(allow_outside_container=True).close()
    monkeypatch.setenv(ALLOW_ENV_VAR, "1")
    TerminalEnv().close()
    monkeypatch.setenv(ALLOW_ENV_VAR, "0")
    with pytest.raises(PermissionError, match=ALLOW_ENV_VAR):
        TerminalEnv()


def test_container_detection(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/\n")
    marker = tmp_path / ".dockerenv"
    assert not in_container([str(marker)], str(cgroup))
    assert not in_container([str(marker)], str(tmp_path / "missing"))
    marker.touch()
    assert in_container([str(marker)], str(cgroup))
    for line in ("0::/system.slice/containerd.service", "12:pids:/docker/4f2a", "0::/kubepods/x"):
        cgroup.write_text(line + "\n")
        assert in_container([str(tmp_path / "none")], str(cgroup)), line


# -- episodes in-process ---------------------------------------------------------------------


def test_builtin_solutions_cover_every_builtin_task() -> None:
    assert set(SOLUTIONS) == set(TaskSet.builtin().ids)


@pytest.mark.parametrize("task_id", sorted(SOLUTIONS))
def test_solves_each_builtin_task(env: TerminalEnv, task_id: str) -> None:
    obs, info = env.reset(seed=0, options={"task": task_id})
    assert obs == {"stdout": "", "stderr": "", "exit_code": 0}
    assert info == {"task_id": task_id, "prompt": TaskSet.builtin().by_id(task_id).prompt}
    _, reward, terminated, truncated, _ = env.step("true")  # doing nothing solves nothing
    assert (reward, terminated, truncated) == (0.0, False, False)
    *before, last = SOLUTIONS[task_id]
    for command in before:
        obs, reward, terminated, _, _ = env.step(command)
        assert obs["exit_code"] == 0, obs
        assert (reward, terminated) == (0.0, False)
    obs, reward, terminated, truncated, info = env.step(last)
    assert obs["exit_code"] == 0, obs
    assert (reward, terminated, truncated) == (1.0, True, False), obs
    assert info["task_id"] == task_id and info["step"] == len(SOLUTIONS[task_id]) + 1
    assert env.state()["solved"] is True


def test_wrong_answers_are_not_rewarded(env: TerminalEnv) -> None:
    env.reset(options={"task": "count-lines"})
    assert env.step("echo 136 > count.txt")[1:3] == (0.0, False)
    env.reset(options={"task": "sort-unique"})
    assert env.step("sort names.txt > unique.txt")[1:3] == (0.0, False)  # duplicates kept
    env.reset(options={"task": "decode-message"})
    assert env.step("cat message.b64")[1:3] == (0.0, False)


def test_seeded_reset_picks_the_same_task_and_a_fresh_workdir() -> None:
    a = TerminalEnv(allow_outside_container=True)
    b = TerminalEnv(allow_outside_container=True)
    try:
        picked = set()
        for seed in range(20):
            task_a = a.reset(seed=seed)[1]["task_id"]
            assert b.reset(seed=seed)[1]["task_id"] == task_a
            picked.add(task_a)
        assert len(picked) > 1
        first = Path(a.state()["workdir"])
        a.step("touch leftover")
        a.reset(seed=0)
        second = Path(a.state()["workdir"])
        assert not first.exists() and second != first
        assert "leftover" not in os.listdir(second)
    finally:
        a.close()
        b.close()
    assert not second.exists()


def test_truncates_after_max_steps() -> None:
    env = TerminalEnv(allow_outside_container=True, max_steps=3)
    try:
        env.reset(options={"task": "hello-file"})
        flags = [env.step("true")[2:4] for _ in range(3)]
        assert flags == [(False, False), (False, False), (False, True)]
        assert env.state()["steps"] == 3
    finally:
        env.close()


def test_ad_hoc_tasks_exit_codes_stdout_and_tasks_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": "three", "prompt": "exit 3", "verifier": {"type": "exit_code", "code": 3}}\n'
    )
    env = TerminalEnv(str(path), allow_outside_container=True)
    try:
        assert env.reset(seed=1)[1]["task_id"] == "three"
        assert env.step("exit 2")[1:3] == (0.0, False)
        obs, reward, terminated, _, _ = env.step("exit 3")
        assert (obs["exit_code"], reward, terminated) == (3, 1.0, True)
        say = {
            "id": "say",
            "prompt": "say hi",
            "verifier": {"type": "stdout_contains", "text": "hi"},
        }
        for task in (say, Task.from_dict(say)):
            env.reset(options={"task": task})
            obs, reward, *_ = env.step("echo hi; echo oops >&2; exit 1")
            assert obs == {"stdout": "hi\n", "stderr": "oops\n", "exit_code": 1} and reward == 1.0
        with pytest.raises(KeyError, match="no task 'nope'"):
            env.reset(options={"task": "nope"})
        broken = {"id": "b", "prompt": "", "verifier": {"type": "exit_code", "code": 0}}
        with pytest.raises(RuntimeError, match="setup of task 'b' failed"):
            env.reset(options={"task": {**broken, "setup": "echo no >&2; exit 4"}})
    finally:
        env.close()


def test_timeouts_background_processes_and_long_output() -> None:
    env = TerminalEnv(allow_outside_container=True, timeout=0.5, max_output=100)
    try:
        env.reset(options={"task": "hello-file"})
        start = time.monotonic()
        obs, _, _, _, info = env.step("echo before; sleep 30; echo after")
        assert obs["exit_code"] == 124 and info["timed_out"] and obs["stdout"] == "before\n"
        obs, _, _, _, info = env.step("sleep 30 & echo started")  # holds stdout open
        assert obs["stdout"] == "started\n" and not info["timed_out"]
        assert time.monotonic() - start < 5
        obs, _, _, _, info = env.step("yes | head -c 1000000")
        assert len(obs["stdout"]) == 100 and info["output_truncated"]
        assert obs["stdout"].endswith("[output truncated: 1000000 bytes in all]")
        obs, *_ = env.step(r"printf 'caf\303\251 \033[0m\377\r\n'")
        assert obs["stdout"] == "caf\\xe9 \\x1b[0m\\xff\\r\n"
        assert env.observation_space.contains(obs)
        assert env.step("kill -9 $$")[0]["exit_code"] == 137
    finally:
        env.close()


def test_commands_run_in_the_workdir_with_a_minimal_environment(
    env: TerminalEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENENV_GYM_TEST_SECRET", "leak")
    env.reset(options={"task": "hello-file"})
    workdir = env.state()["workdir"]
    obs, *_ = env.step('pwd; echo "$HOME"; env | grep -c OPENENV_GYM_TEST_SECRET')
    assert obs["stdout"] == f"{workdir}\n{workdir}\n0\n"


def test_invalid_commands_and_steps_before_reset(env: TerminalEnv) -> None:
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("ls")
    env.reset(options={"task": "hello-file"})
    with pytest.raises(ValueError, match="at most 1024"):
        env.step("x" * 1025)
    with pytest.raises(ValueError, match="printable ASCII"):
        env.step("echo é")
    with pytest.raises(ValueError, match="string"):
        env.step(3)  # type: ignore[arg-type]
    assert env.state()["steps"] == 0


def test_run_is_the_tool_and_step_goes_through_it() -> None:
    assert is_tool(TerminalEnv.run)
    by_step = TerminalEnv(allow_outside_container=True)
    by_tool = TerminalEnv(allow_outside_container=True)
    try:
        assert list(tools(by_tool)) == ["run"]
        by_step.reset(seed=0, options={"task": "make-tree"})
        by_tool.reset(seed=0, options={"task": "make-tree"})
        for command in ["ls -R", *SOLUTIONS["make-tree"]]:
            obs, reward, terminated, truncated, info = by_step.step(command)
            result = tools(by_tool)["run"](command)
            assert result == {
                **obs,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                **info,
            }
        assert result["terminated"] and by_tool.state()["solved"]
    finally:
        by_step.close()
        by_tool.close()


def test_close_removes_the_workdir_and_is_idempotent(env: TerminalEnv) -> None:
    env.reset(options={"task": "find-error"})
    workdir = Path(env.state()["workdir"])
    assert (workdir / "logs" / "app-4.log").is_file()
    env.close()
    env.close()
    assert not workdir.exists() and env.state()["workdir"] is None


def test_render_ansi() -> None:
    env = TerminalEnv(allow_outside_container=True, render_mode="ansi")
    try:
        env.reset(options={"task": "hello-file"})
        assert env.render() == f"# {env.tasks.by_id('hello-file').prompt}\n"
        env.step("echo hi")
        assert env.render() == "$ echo hi\nhi\n[exit 0]\n"
    finally:
        env.close()


def test_check_env(env: TerminalEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # check_env steps with action_space.sample(): random printable text, which sh would run
    # on this machine (e.g. `>/x` writes a file at the root). Sample a harmless command instead.
    monkeypatch.setattr(env.action_space, "sample", lambda *args, **kwargs: "echo checked")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker warns about what it does not fail
        check_env(env, skip_render_check=True)


def test_gymnasium_make_with_the_entry_point() -> None:
    spec = EnvSpec(id="Terminal-v0", entry_point=SPEC)  # as the server's catalog makes it
    env = gymnasium.make(spec, allow_outside_container=True, max_steps=2)
    try:
        env.reset(seed=0, options={"task": "hello-file"})
        assert env.step("echo 'Hello, terminal!' > hello.txt")[1:3] == (1.0, True)
    finally:
        env.close()


# -- in a container --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(docker_image: str) -> str:
    return docker_image


@pytest.mark.docker
def test_docker_terminal_episodes_run_as_their_own_uids(
    image: str, docker_client: Any, containers_before: None
) -> None:
    from openenv_gym.providers.docker import DockerProvider

    secret = "s3cret-" + os.urandom(8).hex()
    # --threads: the server answers other connections while a command runs (as the token test
    # below needs; served inline, a command's own connection waits until its step is done).
    with DockerProvider(
        [SPEC],
        image=image,
        environment={"OPENENV_GYM_TEST_SECRET": secret},
        server_args=["--threads"],
    ) as provider:
        container = docker_client.containers.get(provider.container_ids[0])
        # The secret is there to steal: root (docker exec) reads it in the server's environ.
        _, leaked = container.exec_run(["sh", "-c", "cat /proc/[0-9]*/environ"])
        assert secret.encode() in leaked
        a: Any = openenv_gym.RemoteEnv(SPEC, url=provider.urls[0], token=provider.token)
        b: Any = openenv_gym.RemoteEnv(SPEC, url=provider.urls[0], token=provider.token)
        try:
            # Started without allow_outside_container: the env saw it runs in a container.
            a.reset(options={"task": "hello-file"})
            b.reset(options={"task": "hello-file"})
            uid_a = int(a.step("id -u")[0]["stdout"])
            uid_b, workdir_b = b.step("id -u; pwd")[0]["stdout"].split()
            assert 0 < uid_a != int(uid_b), (uid_a, uid_b)
            obs = a.step("cat /proc/[0-9]*/environ /proc/$PPID/environ; env")[0]
            assert secret not in obs["stdout"] and "Permission denied" in obs["stderr"], obs
            obs = a.step(f"echo 'Hello, terminal!' > {workdir_b}/hello.txt; ls {workdir_b}")[0]
            assert obs["exit_code"] != 0 and obs["stdout"] == "", obs
            assert b.step("true")[1:3] == (0.0, False)
            obs, *_, info = a.step("setsid sleep 7391 & nohup sleep 7392 & echo started")
            assert obs["stdout"] == "started\n" and not info["timed_out"]
            _, left = container.exec_run(["sh", "-c", "cat /proc/[0-9]*/cmdline"])
            assert b"sleep" not in left, left
            # The server's port is reachable from an episode, but not usable without its token.
            dial = (
                "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', 8765)); "
                "s.sendall(b'GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\n"
                "Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
                "Sec-WebSocket-Version: 13\\r\\n\\r\\n'); print(s.recv(64).decode())\""
            )
            obs = a.step(dial)[0]
            assert obs["stdout"].startswith("HTTP/1.1 401"), obs
            assert b.step(SOLUTIONS["hello-file"][0])[1:3] == (1.0, True)
        finally:
            a.close()
            b.close()


@pytest.mark.docker
def test_docker_terminal_env_builtin_tasks(image: str, containers_before: None) -> None:
    # Needs openenv_gym/envs/terminal_tasks.jsonl in the wheel the image installs.
    env: Any = openenv_gym.RemoteEnv(SPEC, docker_image=image)
    try:
        for task_id, commands in SOLUTIONS.items():
            env.reset(options={"task": task_id})
            for command in commands:
                obs, reward, terminated, *_ = env.step(command)
            assert (reward, terminated) == (1.0, True), (task_id, obs)
    finally:
        env.close()
