"""The terminal sandbox against real attacks: real processes, real uids, real namespaces.

Each attack runs in every isolating mode this machine offers. A missing mode is skipped with the
reason (``namespaces`` needs bubblewrap: apt-get install -y bubblewrap); CI installs it and sets
OPENENV_GYM_REQUIRE_ALL=1, which turns those skips into failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openenv_gym.envs import sandbox
from openenv_gym.envs.sandbox import SandboxLimits, SandboxUnavailableError
from openenv_gym.envs.terminal import TerminalEnv
from openenv_gym.testing.optional import unavailable

MODES = ["namespaces", "uid"]


def _require(mode: str) -> None:
    problem = sandbox.available_modes()[mode]  # type: ignore[index]
    if problem is None:
        return
    # As root (CI) both modes can work: CI installs bubblewrap and requires them.
    family = "bubblewrap" if mode == "namespaces" else "sandbox"
    unavailable(family, f"isolation {mode!r} unavailable here: {problem}")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    _require(request.param)
    return str(request.param)


def _env(mode: str, **kwargs: object) -> TerminalEnv:
    env = TerminalEnv(allow_outside_container=True, isolation=mode, **kwargs)  # type: ignore[arg-type]
    env.reset(options={"task": "hello-file"})
    return env


@pytest.fixture
def env(mode: str) -> Iterator[TerminalEnv]:
    env = _env(mode)
    yield env
    env.close()


def _uid_of(env: TerminalEnv) -> int:
    return int(env.step("id -u")[0]["stdout"])


def _pids_of(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is ``uid``, seen from the test process."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] not in "ZX":
            pids.append(int(entry))
    return pids


def _processes_running(word: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if word.encode() in cmdline and b"pytest" not in cmdline:
            found.append(int(entry))
    return found


# -- the server's secrets ----------------------------------------------------------------------

_SERVER = textwrap.dedent(
    """
    import json, sys
    from openenv_gym.envs.terminal import TerminalEnv
    env = TerminalEnv(allow_outside_container=True, isolation=sys.argv[1])
    env.reset(options={"task": "hello-file"})
    results = [env.step(command)[0] for command in json.loads(sys.stdin.read())]
    env.close()
    print(json.dumps(results))
    """
)


def _from_a_server(mode: str, secret: str, commands: list[str]) -> list[dict[str, object]]:
    """Run ``commands`` in a server process whose environment and argv hold ``secret``."""
    env = {**os.environ, "OPENENV_GYM_TOKEN": secret}
    done = subprocess.run(
        [sys.executable, "-c", _SERVER, mode, f"--token={secret}"],
        input=json.dumps(commands),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, object]] = json.loads(done.stdout)
    return results


def test_sandbox_commands_cannot_read_the_server_environment(mode: str) -> None:
    secret = "s3cret-" + os.urandom(8).hex()
    parent, everyone, env_var = _from_a_server(
        mode,
        secret,
        [
            "cat /proc/$PPID/environ",
            "cat /proc/[0-9]*/environ 2>/dev/null; cat /proc/self/environ",
            "env",
        ],
    )
    for result in (parent, everyone, env_var):
        assert secret not in str(result["stdout"]), result
    assert "OPENENV_GYM_TOKEN" not in str(env_var["stdout"])


def test_sandbox_namespaces_hide_every_other_process_and_the_network() -> None:
    _require("namespaces")
    secret = "s3cret-" + os.urandom(8).hex()
    cmdlines, tmp, pids, net = _from_a_server(
        "namespaces",
        secret,
        [
            "cat /proc/[0-9]*/cmdline",
            "ls -A /tmp",
            "ls /proc | grep -c '^[0-9]'",
            "tail -n +3 /proc/net/dev | cut -d: -f1",
        ],
    )
    assert secret not in str(cmdlines["stdout"])  # uid mode cannot hide command lines
    assert (
        str(tmp["stdout"]).startswith("openenv-terminal-") and str(tmp["stdout"]).count("\n") == 1
    )
    assert int(str(pids["stdout"])) <= 4  # bwrap's init, the shell, ls, grep
    assert str(net["stdout"]).split() == ["lo"]


# -- episodes against each other ---------------------------------------------------------------


def test_sandbox_episodes_cannot_touch_each_other(mode: str) -> None:
    a, b = _env(mode), _env(mode)
    try:
        victim = b.state()["workdir"]
        assert _uid_of(a) != _uid_of(b)
        obs = a.step(f"echo 'Hello, terminal!' > {victim}/hello.txt")[0]
        assert obs["exit_code"] != 0, obs
        obs = a.step(f"ls {victim} || cat {victim}/* ")[0]
        assert obs["exit_code"] != 0 and obs["stdout"] == "", obs
        assert b.step("true")[1:3] == (0.0, False)  # not solved by the neighbour
        assert b.step("echo 'Hello, terminal!' > hello.txt")[1:3] == (1.0, True)
    finally:
        a.close()
        b.close()


def test_sandbox_workdir_is_private_to_the_episode_uid(env: TerminalEnv) -> None:
    uid = _uid_of(env)
    workdir = Path(env.state()["workdir"])
    info = workdir.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (uid, os.getegid(), 0o2770)
    assert uid not in (0, os.getuid())
    assert (workdir / "hello.txt").exists() is False and env.step("ls -A")[0]["stdout"] == ""


def test_sandbox_uid_is_freed_when_the_episode_ends(mode: str) -> None:
    first = _env(mode)
    uid = _uid_of(first)
    first.step("setsid sleep 4711 & echo x > /tmp/left-by-episode")
    first.close()
    assert not _pids_of(uid)
    second = _env(mode)
    try:
        assert _uid_of(second) == uid  # reused, and clean
        assert "left-by-episode" not in second.step("ls /tmp")[0]["stdout"]
    finally:
        second.close()


# -- processes that try to outlive their command -----------------------------------------------

ESCAPES = "setsid sleep 7391 & nohup sleep 7392 >/dev/null 2>&1 & (sleep 7393 &) & echo started"


def _threads_and_fds() -> tuple[int, int]:
    return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))


def test_sandbox_escaped_processes_die_with_the_command(env: TerminalEnv) -> None:
    uid = _uid_of(env)
    env.step("true")  # let lazily started resources settle before counting
    before = _threads_and_fds()
    for _ in range(30):
        obs, *_, info = env.step(ESCAPES)
        assert obs["stdout"] == "started\n" and not info["timed_out"], obs
        assert not _processes_running("sleep 739"), "a process outlived its command"
    assert not _pids_of(uid)
    assert _threads_and_fds() == before


def test_sandbox_escaped_processes_die_with_the_episode(mode: str) -> None:
    env = _env(mode, timeout=0.5)
    uid = _uid_of(env)
    obs, *_, info = env.step("setsid sh -c 'sleep 7394' & sleep 30")
    assert info["timed_out"] and obs["exit_code"] == 124
    assert not _processes_running("sleep 7394")
    env.close()
    assert not _pids_of(uid)


def test_sandbox_timeouts_are_reported_and_bounded(env: TerminalEnv) -> None:
    short = _env(env.isolation, timeout=0.5)
    try:
        start = time.monotonic()
        obs, *_, info = short.step("echo before; sleep 30; echo after")
        assert (obs["exit_code"], obs["stdout"], info["timed_out"]) == (124, "before\n", True)
        obs, *_, info = short.step("exec >&- 2>&-; sleep 30")  # closes its pipes, runs on
        assert obs["exit_code"] == 124 and info["timed_out"]
        assert time.monotonic() - start < 10
        assert short.step("kill -9 $$")[0]["exit_code"] == 137
    finally:
        short.close()


# -- resource limits ---------------------------------------------------------------------------


def test_sandbox_fork_bomb_is_bounded_and_cleaned_up(mode: str) -> None:
    env = _env(mode, timeout=3.0, limits=SandboxLimits(processes=48))
    try:
        uid = _uid_of(env)
        count = env.step(
            "python3 -c 'import os, time\n"
            "n = 0\n"
            "try:\n"
            "    while n < 500:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(60)\n"
            "        n += 1\n"
            "except OSError:\n"
            "    print(n)'"
        )[0]
        assert 0 < int(count["stdout"]) < 48, count
        assert not _pids_of(uid)
        start = time.monotonic()
        obs, *_, info = env.step(":(){ :|:& };:")
        assert time.monotonic() - start < 15 and (info["timed_out"] or obs["exit_code"] != 0)
        assert not _pids_of(uid)
        assert env.step("echo alive")[0]["stdout"] == "alive\n"  # the episode still works
    finally:
        env.close()


def test_sandbox_big_files_and_big_allocations_fail(mode: str) -> None:
    limits = SandboxLimits(file_size=1 << 20, address_space=256 << 20)
    env = _env(mode, limits=limits)
    try:
        obs = env.step("head -c 10000000 /dev/zero > big")[0]
        assert obs["exit_code"] == 128 + 25, obs  # SIGXFSZ
        assert (Path(env.state()["workdir"]) / "big").stat().st_size <= 1 << 20
        obs = env.step("python3 -c 'bytearray(512 << 20)'")[0]
        assert obs["exit_code"] != 0 and "MemoryError" in obs["stderr"], obs
        obs = env.step("python3 -c 'bytearray(16 << 20); print(1)'")[0]
        assert obs["stdout"] == "1\n", obs
        # Out of memory, the kernel kills the episode's processes before the server.
        assert env.step("cat /proc/self/oom_score_adj")[0]["stdout"] == "1000\n"
    finally:
        env.close()


# -- refusing to run unisolated ----------------------------------------------------------------


def test_sandbox_refuses_without_isolation_unless_the_operator_opts_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = {
        "namespaces": "bwrap not found: install bubblewrap",
        "uid": "per-episode uids need a root server",
        "none": None,
    }
    monkeypatch.setattr(sandbox, "available_modes", lambda: missing)
    with pytest.raises(SandboxUnavailableError, match="bwrap not found") as caught:
        TerminalEnv(allow_outside_container=True)
    assert isinstance(caught.value, PermissionError)
    assert "isolation='none'" in str(caught.value) and "need a root server" in str(caught.value)
    with pytest.raises(SandboxUnavailableError, match="expected isolation 'uid'"):
        TerminalEnv(allow_outside_container=True, isolation="uid")
    with pytest.raises(ValueError, match="isolation must be one of"):
        TerminalEnv(allow_outside_container=True, isolation="chroot")  # type: ignore[arg-type]
    env = TerminalEnv(allow_outside_container=True, isolation="none")
    try:
        env.reset(options={"task": "hello-file"})
        assert env.isolation == "none"
        assert env.step("echo 'Hello, terminal!' > hello.txt")[1:3] == (1.0, True)
    finally:
        env.close()


def test_sandbox_auto_picks_the_strongest_mode() -> None:
    modes = sandbox.available_modes()
    expected = "namespaces" if modes["namespaces"] is None else "uid"
    if modes[expected] is None:
        env = TerminalEnv(allow_outside_container=True)
        assert env.isolation == expected
        env.close()
    else:
        with pytest.raises(SandboxUnavailableError):
            TerminalEnv(allow_outside_container=True)
