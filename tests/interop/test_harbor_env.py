"""HarborEnv in-process against real containers: Harbor's scores, limits, timeouts, cleanup."""

from __future__ import annotations

import io
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openenv_gym.interop.harbor.container import TASK_LABEL, image_for
from openenv_gym.interop.harbor.env import HarborEnv
from openenv_gym.interop.harbor.task import TaskDir, load_task
from openenv_gym.testing.harbor_tasks import TASKS_DIR

SOLVE = {
    "hello-file": "echo 'Hello, world!' > /app/hello.txt",
    "word-count": "wc -w < text.txt > count.txt",
}


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Path:
    """The sample tasks plus two whose verifier or agent budget is short."""
    root = tmp_path_factory.mktemp("harbor") / "tasks"
    shutil.copytree(TASKS_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for name, toml, test in (
        (
            "slow-verifier",
            "[verifier]\ntimeout_sec = 2\n",
            "sleep 30\necho 1 > /logs/verifier/reward.txt",
        ),
        ("short-agent", "[agent]\ntimeout_sec = 3\n", "echo 1 > /logs/verifier/reward.txt"),
    ):
        shutil.copytree(root / "hello-file", root / name)
        (root / name / "task.toml").write_text(toml)
        (root / name / "tests" / "test.sh").write_text(f"#!/bin/bash\n{test}\n")
    prebuilt = root / "prebuilt"  # a named image: environment/ is copied to the workdir
    shutil.copytree(root / "hello-file", prebuilt)
    (prebuilt / "environment" / "Dockerfile").unlink()
    (prebuilt / "environment" / "data.txt").write_text("data\n")
    (prebuilt / "task.toml").write_text(
        f'[environment]\ndocker_image = "{docker_image}"\nworkdir = "/srv/task"\n'
    )
    (prebuilt / "tests" / "test.sh").write_text(
        "#!/bin/bash\n[ -f /srv/task/data.txt ] && echo 1 > /logs/verifier/reward.txt\n"
    )
    return root


@pytest.fixture
def env(tasks_dir: Path, docker_client: Any) -> Iterator[HarborEnv]:
    harbor = HarborEnv(tasks_dir, oracle=True, timeout=20, render_mode="ansi")
    yield harbor
    container = harbor.state()["container"]
    harbor.close()
    if container is not None:
        assert not docker_client.containers.list(all=True, filters={"id": container})


@pytest.mark.parametrize("task", sorted(SOLVE))
def test_harbor_env_oracle_scores_one_and_doing_nothing_scores_zero(
    env: HarborEnv, task: str
) -> None:
    obs, info = env.reset(options={"task": task})
    assert obs["stdout"] == info["instruction"] == load_task(TASKS_DIR / task).instruction
    _, reward, terminated, truncated, info = env.step("submit")
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert info["rewards"]["reward"] == 0.0 and "verifier_error" not in info
    env.reset(options={"task": task})
    env.step("oracle")
    _, reward, terminated, _, info = env.step(" submit\n")
    assert (reward, terminated) == (1.0, True)
    if task == "word-count":  # reward.json: every named component, the verifier env applied
        assert info["rewards"] == {"reward": 1.0, "exists": 1.0, "exact": 1.0}
        assert "expected=9" in env.render()  # the submit observed the test output


def test_harbor_env_an_agent_solving_by_commands_scores_one(env: HarborEnv) -> None:
    env.reset(options={"task": "word-count"})
    obs, reward, _, _, _ = env.step("echo a > note; cd /tmp")
    obs, reward, _, _, _ = env.step("cat note; pwd")
    assert (obs["stdout"], reward) == ("a\n/work\n", 0.0)  # files persist, cd does not
    started = time.monotonic()
    obs, *_ = env.step("sleep 100 & echo started; echo ${t}${l}${c}${d}")
    assert obs["stdout"] == "started\n\n"  # the shell's own variables are not the command's
    assert time.monotonic() - started < 2.0  # a background process holds up no step
    env.step(SOLVE["word-count"])
    assert env.step("submit")[1] == 1.0
    with pytest.raises(RuntimeError, match="has ended"):
        env.step("true")


def test_harbor_env_container_has_the_tasks_limits_and_no_network(
    env: HarborEnv, docker_client: Any
) -> None:
    env.reset(options={"task": "word-count"})
    container = docker_client.containers.get(env.state()["container"])
    host = container.attrs["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["NetworkMode"]) == (10**9, 1024 << 20, "none")
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 512 and container.labels[TASK_LABEL] == "word-count"
    obs, *_ = env.step("cat /sys/class/net/*/address | sort -u | wc -l; ulimit -n")
    assert obs["stdout"] == "1\n256\n"  # the loopback device only; the sandbox's rlimits


def test_harbor_env_command_timeout_output_and_operator_limits_are_bounded(
    tasks_dir: Path, docker_client: Any
) -> None:
    limits = {"pids": 64, "max_cpus": 0.5}  # a hosting file's table
    with HarborEnv(tasks_dir, timeout=1.5, max_output=100, limits=limits) as env:
        env.reset(options={"task": "hello-file"})
        host = docker_client.containers.get(env.state()["container"]).attrs["HostConfig"]
        assert (host["PidsLimit"], host["NanoCpus"]) == (64, 5 * 10**8)
        started = time.monotonic()
        obs, _, _, _, info = env.step("sleep 30; echo late")
        elapsed = time.monotonic() - started
        assert (obs["exit_code"], info["timed_out"], obs["stdout"]) == (124, True, "")
        assert elapsed < 1.5 + 4
        obs, _, _, _, info = env.step("head -c 1000000 /dev/zero | tr '\\0' y")
        assert len(obs["stdout"]) == 100 and info["output_truncated"]
        assert obs["stdout"].endswith("[output truncated: 1000000 bytes in all]")


def test_harbor_env_out_of_commands_grades_and_truncates(tasks_dir: Path) -> None:
    with HarborEnv(tasks_dir, max_steps=1) as env:
        env.reset(options={"task": "hello-file"})
        _, reward, terminated, truncated, info = env.step(SOLVE["hello-file"])
        assert (reward, terminated, truncated) == (1.0, False, True)
        assert info["rewards"] == {"reward": 1.0} and not info["agent_timed_out"]


def test_harbor_env_agent_timeout_cuts_the_command_grades_and_truncates(env: HarborEnv) -> None:
    env.reset(options={"task": "short-agent"})
    started = time.monotonic()
    _, reward, terminated, truncated, info = env.step("sleep 30")
    assert time.monotonic() - started < 3 + 8  # the budget, then the verifier
    assert (reward, terminated, truncated, info["agent_timed_out"]) == (1.0, False, True, True)


def test_harbor_env_verifier_timeout_gives_zero_and_says_why(env: HarborEnv) -> None:
    env.reset(options={"task": "slow-verifier"})
    started = time.monotonic()
    _, reward, terminated, _, info = env.step("submit")
    assert time.monotonic() - started < 2 + 8
    assert (reward, terminated, info["verifier_timed_out"]) == (0.0, True, True)
    assert info["verifier_error"].startswith("VerifierTimeoutError: verifier execution timed out")


def test_harbor_env_reset_replaces_the_container_and_picks_tasks_by_seed(
    env: HarborEnv, tasks_dir: Path, docker_client: Any
) -> None:
    _, first = env.reset(seed=7)
    old = env.state()["container"]
    _, again = env.reset(seed=7)
    assert first["task"] == again["task"]
    assert not docker_client.containers.list(all=True, filters={"id": old})
    with pytest.raises(KeyError, match="no Harbor task"):
        env.reset(options={"task": "../hello-file"})


def test_harbor_env_prebuilt_image_task_gets_its_environment_folder(
    env: HarborEnv, docker_image: str, docker_client: Any
) -> None:
    env.reset(options={"task": "prebuilt"})
    assert docker_client.containers.get(env.state()["container"]).image.tags[0] == docker_image
    obs, *_ = env.step("pwd; cat data.txt")
    assert obs["stdout"] == "/srv/task\ndata\n"
    assert env.step("submit")[1] == 1.0


def test_harbor_env_image_is_cached_by_content(
    tasks_dir: Path, tmp_path: Path, docker_client: Any
) -> None:
    task = TaskDir(tasks_dir)["hello-file"]
    assert image_for(task) == image_for(task)
    changed = tmp_path / "hello-file"
    shutil.copytree(task.path, changed)
    (changed / "environment" / "Dockerfile").write_text("FROM openenv-gym:latest\nWORKDIR /srv\n")
    tag = image_for(load_task(changed))
    assert tag != image_for(task) and tag.startswith("openenv-gym-harbor/hello-file:")
    docker_client.images.remove(tag)


def test_harbor_env_operator_switches_are_off_by_default(tasks_dir: Path) -> None:
    with HarborEnv(tasks_dir) as env:
        env.reset(options={"task": "hello-file"})
        with pytest.raises(PermissionError, match="oracle is not enabled"):
            env.step("oracle")
        with pytest.raises(PermissionError, match="sandbox API"):
            env.exec("id")


def test_harbor_env_sandbox_api_execs_uploads_and_downloads(tasks_dir: Path) -> None:
    with HarborEnv(tasks_dir, sandbox_api=True) as env:
        env.reset(options={"task": "hello-file"})
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            data = b"payload\n"
            info = tarfile.TarInfo("sub/file.txt")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        env.upload("/data", buffer.getvalue())
        result = env.exec("cat sub/file.txt; echo $X >&2; exit 3", cwd="/data", env={"X": "y"})
        assert result == {"stdout": "payload\n", "stderr": "y\n", "return_code": 3}
        tar = env.download("/data/sub/file.txt")
        assert tar is not None
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            handle = archive.extractfile("file.txt")
            assert handle is not None and handle.read() == b"payload\n"
        assert env.download("/nope") is None
