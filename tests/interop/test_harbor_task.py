"""Harbor's task format read without Harbor: task.toml fields, reward files, env templates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from openenv_gym.interop.harbor.task import (
    RewardFileError,
    TaskDir,
    TaskFormatError,
    load_task,
    parse_rewards,
    resolve_env,
)
from openenv_gym.testing.harbor_tasks import TASKS_DIR


def _task(root: Path, name: str, toml: str, *, dockerfile: bool = True) -> Path:
    folder = root / name
    (folder / "tests").mkdir(parents=True)
    (folder / "environment").mkdir()
    (folder / "task.toml").write_text(toml)
    (folder / "instruction.md").write_text("do it\n")
    (folder / "tests" / "test.sh").write_text("#!/bin/bash\necho 1 > /logs/verifier/reward.txt\n")
    if dockerfile:
        (folder / "environment" / "Dockerfile").write_text("FROM openenv-gym:latest\n")
    return folder


def test_load_task_reads_timeouts_resources_and_env_tables() -> None:
    task = load_task(TASKS_DIR / "word-count")
    assert (task.name, task.verifier_timeout, task.agent_timeout) == ("word-count", 60.0, 120.0)
    assert (task.cpus, task.memory_mb, task.workdir, task.network) == (
        1.0,
        1024,
        "/work",
        "no-network",
    )
    assert task.verifier_env == {"EXPECTED_WORDS": "${WORD_COUNT_EXPECTED:-9}"}
    assert task.instruction.startswith("The file `/work/text.txt`")
    assert task.dockerfile == TASKS_DIR / "word-count" / "environment" / "Dockerfile"


def test_load_task_defaults_are_harbors_and_legacy_fields_map(tmp_path: Path) -> None:
    plain = load_task(_task(tmp_path, "plain", ""))
    assert (plain.verifier_timeout, plain.agent_timeout, plain.build_timeout) == (
        600.0,
        None,
        600.0,
    )
    assert (plain.cpus, plain.memory_mb, plain.network) == (None, None, "public")
    legacy = load_task(
        _task(
            tmp_path,
            "legacy",
            '[environment]\nmemory = "2G"\nstorage = "512M"\nallow_internet = false\n',
        )
    )
    assert (legacy.memory_mb, legacy.storage_mb, legacy.network) == (2048, 512, "no-network")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[verifier]\ntimeout_sec = -1\n", "timeout_sec must be positive"),
        ('[agent]\ntimeout_sec = "long"\n', "timeout_sec must be a finite number"),
        ('[environment]\nworkdir = "relative"\n', "workdir must be an absolute path"),
        ('[environment]\nnetwork_mode = "open"\n', "network_mode must be"),
        ("verifier = 3\n", "[verifier] must be a table"),
        ("[[broken\n", "task.toml"),
    ],
)
def test_load_task_refuses_invalid_fields_naming_them(
    tmp_path: Path, toml: str, message: str
) -> None:
    with pytest.raises(TaskFormatError, match=message.replace("[", r"\[")):
        load_task(_task(tmp_path, "bad", toml))


def test_load_task_needs_a_dockerfile_or_an_image(tmp_path: Path) -> None:
    with pytest.raises(TaskFormatError, match="environment/Dockerfile is missing"):
        load_task(_task(tmp_path, "none", "", dockerfile=False))
    prebuilt = load_task(
        _task(tmp_path, "prebuilt", '[environment]\ndocker_image = "img:1"\n', dockerfile=False)
    )
    assert prebuilt.docker_image == "img:1" and prebuilt.dockerfile is None


def test_task_dir_lists_task_folders_and_names_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    root.mkdir()
    _task(root, "one", "")
    (root / "notes").mkdir()  # no task.toml: not a task
    outside = _task(tmp_path, "outside", "")
    (root / "linked").symlink_to(outside)  # a link out of the directory is not followed
    tasks = TaskDir(root)
    assert list(tasks) == ["one"] and len(tasks) == 1
    for name in ("../outside", "linked", str(outside), "/etc/passwd", "", "notes"):
        with pytest.raises(KeyError, match="no Harbor task"):
            tasks[name]


def test_task_dir_refuses_an_empty_directory_and_a_broken_task(tmp_path: Path) -> None:
    with pytest.raises(TaskFormatError, match="no Harbor task folder"):
        TaskDir(tmp_path)
    _task(tmp_path, "broken", "[agent]\ntimeout_sec = 0\n")
    with pytest.raises(TaskFormatError, match="timeout_sec must be positive"):
        TaskDir(tmp_path)


def test_sample_tasks_are_all_loadable() -> None:
    assert sorted(TaskDir(TASKS_DIR)) == ["hello-file", "word-count"]
    for name in TaskDir(TASKS_DIR):
        assert (TASKS_DIR / name / "solution" / "solve.sh").is_file()
    assert shutil.which("bash") is not None  # the scripts' interpreter exists on hosts too


def test_parse_rewards_prefers_json_and_keeps_every_component() -> None:
    assert parse_rewards(b'{"reward": 0.5, "style": 1}', b"0") == {"reward": 0.5, "style": 1.0}
    assert parse_rewards(None, b"1\n") == {"reward": 1.0}
    assert parse_rewards(b'{"a": true}', None) == {"a": 1.0}  # bool is an int, as in Harbor


@pytest.mark.parametrize(
    ("reward_json", "reward_txt", "message"),
    [
        (None, None, "no reward file found"),
        (b"", None, "reward.json"),
        (None, b"", "reward.txt"),
        (None, b"nan", "non-finite"),
        (None, b"one", "failed to parse"),
        (b'{"reward": "1"}', None, "non-numeric"),
        (b'{"reward": NaN}', None, "non-finite"),
        (b"1.0", None, "object of name -> number"),
        (b"{", None, "failed to parse"),
    ],
)
def test_parse_rewards_refuses_what_harbor_refuses(
    reward_json: bytes | None, reward_txt: bytes | None, message: str
) -> None:
    with pytest.raises(RewardFileError, match=message):
        parse_rewards(reward_json, reward_txt)


def test_resolve_env_reads_only_the_operators_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED", "yes")
    monkeypatch.setenv("SECRET", "server-secret")
    env = {"A": "${ALLOWED}", "B": "${SECRET:-fallback}", "C": "x-${ALLOWED:-no}-y"}
    assert resolve_env(env, allowed={"ALLOWED"}, where="t") == {
        "A": "yes",
        "B": "fallback",
        "C": "x-yes-y",
    }
    with pytest.raises(TaskFormatError, match=r"\$\{SECRET\} has no default"):
        resolve_env({"S": "${SECRET}"}, allowed=(), where="t")
