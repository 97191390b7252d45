"""Busy-waiting: a client polls for its reply, a server polls for the next request, both bounded.

A process that sleeps for a reply is woken by the scheduler (~0.1-0.2 ms on a VM); polling
takes the reply at once. These tests pin what may not change while that is tuned: results stay
exact, deadlines still hold, polling ends when its budget does, and "auto" never makes a client
poll against local servers that need every core.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Final

import gymnasium
import numpy as np
import pytest

from openenv_gym.client.connection import AUTO_BUSY_WAIT, Connection, busy_wait_seconds
from openenv_gym.client.options import ClientOptions
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import CallTimeoutError, RemoteError
from openenv_gym.protocol.messages import Op
from openenv_gym.providers.local import LOCAL_BUSY_WAIT, LocalProvider

CORES = len(os.sched_getaffinity(0))
NATIVE: Final = "vector_entry_point"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _argv(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().decode().split("\0")


@pytest.fixture(scope="module")
def polling_server() -> Iterator[LocalProvider]:
    with LocalProvider(["CartPole-v1"], extra_args=["--busy-wait", "0.3"]) as provider:
        yield provider


def test_auto_polls_unless_local_servers_need_every_core() -> None:
    assert CORES >= 2, "this machine has one core: auto never polls there"
    assert busy_wait_seconds("auto", ["ws://127.0.0.1:1"]) == AUTO_BUSY_WAIT
    assert busy_wait_seconds("auto", [f"ws://127.0.0.1:{p}" for p in range(CORES)]) == 0.0
    # Servers elsewhere take no core of this machine: polling for them costs no server time.
    remote = [f"ws://10.0.0.{i}:8765" for i in range(1, CORES + 2)]
    assert busy_wait_seconds("auto", remote) == AUTO_BUSY_WAIT
    # Every spelling of loopback counts as a local server.
    assert busy_wait_seconds("auto", [f"ws://localhost:{p}" for p in range(CORES)]) == 0.0
    assert busy_wait_seconds("auto", [f"ws://[::1]:{p}" for p in range(CORES)]) == 0.0
    assert busy_wait_seconds(0, ["ws://127.0.0.1:1"]) == 0.0
    assert busy_wait_seconds(0.01, []) == 0.01


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "fast", True, None])
def test_busy_wait_refuses_what_is_not_seconds(bad: object) -> None:
    with pytest.raises(ValueError, match="busy_wait must be 'auto' or seconds >= 0"):
        busy_wait_seconds(bad, ["ws://127.0.0.1:1"])  # type: ignore[arg-type]


def test_a_bad_busy_wait_fails_before_connecting() -> None:
    # Port 9 (discard) is never served here: a connection attempt would be a ConnectError.
    with pytest.raises(ValueError, match="busy_wait"):
        Connection("ws://127.0.0.1:9", busy_wait=-0.5)


def test_env_options_keep_auto_and_connections_get_the_seconds(
    polling_server: LocalProvider,
) -> None:
    with RemoteVectorEnv(
        "CartPole-v1", 8, urls=polling_server.urls, token=polling_server.token
    ) as env:
        assert env.options.busy_wait == "auto"  # as given: equal options compare equal
        assert env._shards[0].connection._ws is not None
        assert env._shards[0].connection._ws.busy_wait == AUTO_BUSY_WAIT
        assert env._shards[0].connection._ws.busy_wait_alone
    options = ClientOptions(busy_wait=0.0)
    with RemoteVectorEnv(
        "CartPole-v1", 8, urls=polling_server.urls, token=polling_server.token, options=options
    ) as env:
        assert env._shards[0].connection._ws is not None
        assert env._shards[0].connection._ws.busy_wait == 0.0


@pytest.mark.parametrize("busy_wait", [0.0, 0.05])
def test_polling_both_ends_is_exact(polling_server: LocalProvider, busy_wait: float) -> None:
    num_envs, steps = 64, 300
    local = gymnasium.make_vec("CartPole-v1", num_envs, vectorization_mode=NATIVE)
    remote = RemoteVectorEnv(
        "CartPole-v1",
        num_envs,
        urls=polling_server.urls,
        token=polling_server.token,
        server_vectorization=NATIVE,
        busy_wait=busy_wait,
    )
    try:
        rng = np.random.default_rng(3)
        expected_obs, _ = local.reset(seed=11)
        obs, _ = remote.reset(seed=11)
        np.testing.assert_array_equal(obs, expected_obs)
        for _ in range(steps):
            actions = rng.integers(0, 2, size=num_envs)
            want, got = local.step(actions), remote.step(actions)
            for expected, actual in zip(want[:4], got[:4], strict=True):
                assert actual.dtype == expected.dtype
                np.testing.assert_array_equal(actual, expected)
            assert got[4].keys() == want[4].keys()
    finally:
        remote.close()
        local.close()


def test_a_deadline_holds_while_polling(polling_server: LocalProvider) -> None:
    connection = Connection(
        polling_server.urls[0], token=polling_server.token, busy_wait=30.0, call_timeout=None
    )
    try:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError, match=r"timed out|within"):
            connection.receive(10_000, timeout=0.2, operation="nothing")  # never answered
        assert time.monotonic() - started < 2.0  # the deadline, not the 30 s of polling
    finally:
        connection.close()


def test_server_polls_for_its_budget_after_a_reply_then_sleeps(
    polling_server: LocalProvider,
) -> None:
    pid = polling_server.pids[0]
    with RemoteVectorEnv(
        "CartPole-v1", 4, urls=polling_server.urls, token=polling_server.token, busy_wait=0.0
    ) as env:
        env.reset(seed=0)
        time.sleep(1.0)  # any earlier polling is over
        idle_before = _cpu_seconds(pid)
        time.sleep(0.6)
        idle = _cpu_seconds(pid) - idle_before
        started = _cpu_seconds(pid)
        env.step(np.zeros(4, dtype=np.int64))
        time.sleep(0.6)  # the 0.3 s budget passes within this
        polled = _cpu_seconds(pid) - started
        after = _cpu_seconds(pid)
        time.sleep(0.6)
        idle_after = _cpu_seconds(pid) - after
    assert idle < 0.06, f"an idle server used {idle:.2f} s of CPU in 0.6 s"
    assert 0.15 <= polled <= 0.5, f"after one reply the server polled for {polled:.2f} s"
    assert idle_after < 0.06, f"polling did not end: {idle_after:.2f} s of CPU in 0.6 s"


def test_local_provider_gives_lone_servers_a_polling_budget() -> None:
    assert CORES >= 2
    with LocalProvider(["CartPole-v1"], num_servers=1) as one:
        argv = _argv(one.pids[0])
        assert argv[argv.index("--busy-wait") + 1] == str(LOCAL_BUSY_WAIT)
    with LocalProvider(["CartPole-v1"], num_servers=CORES) as many:
        assert all("--busy-wait" not in _argv(pid) for pid in many.pids)
    with LocalProvider(["CartPole-v1"], extra_args=["--busy-wait=0"]) as chosen:
        argv = _argv(chosen.pids[0])
        assert [arg for arg in argv if arg.startswith("--busy-wait")] == ["--busy-wait=0"]


@pytest.mark.parametrize("bad", ["-1", "soon", "inf"])
def test_serve_refuses_a_bad_busy_wait(bad: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "openenv_gym", "serve", "CartPole-v1", f"--busy-wait={bad}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--busy-wait" in result.stderr and "expected seconds" in result.stderr


_THREADS_PROBE = """
import sys, threading, time
from openenv_gym.client.connection import Connection
url, token, company = sys.argv[1], sys.argv[2], sys.argv[3]
connection = Connection(url, token=token)
ws = connection._ws
assert ws.busy_wait_alone
ws.busy_wait = 0.4  # the "auto" rule, with a budget long enough to see in CPU time
stop = threading.Event()

def spin():  # Python that runs: it wants the GIL whenever the waiting thread lets go of it
    while not stop.is_set():
        sum(range(100))

# Two busy threads: one of them wants the GIL even while the scheduler has the other off a core.
threads = {"alone": [], "idle": [stop.wait], "busy": [spin] * 2, "many": [stop.wait] * 8}[company]
for target in threads:
    threading.Thread(target=target, daemon=True).start()
waits = []
for _ in range(2):
    ws._quick = True  # as after a quick reply: only the threads decide
    started = time.thread_time()  # this thread's CPU: the spinning thread's is not counted
    try:
        ws.recv(timeout=0.5)  # nothing was asked: the wait runs to its deadline
    except TimeoutError:
        pass
    waits.append(time.thread_time() - started)
print(*waits)
stop.set()
connection.close()
"""


@pytest.mark.parametrize(
    ("company", "polls"),
    [("alone", True), ("idle", True), ("busy", False), ("many", False)],
)
def test_auto_polls_unless_other_threads_compete_for_the_gil(
    polling_server: LocalProvider, company: str, polls: bool
) -> None:
    # A fresh interpreter: this test process may hold threads other tests left behind.
    token = polling_server.token or ""
    result = subprocess.run(
        [sys.executable, "-c", _THREADS_PROBE, polling_server.urls[0], token, company],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, second = map(float, result.stdout.strip().splitlines()[-1].split())
    # A sleeping wait takes ~0 s of CPU; one that polls its 0.4 s budget takes it all, or at
    # least a quarter of it on a loaded machine (other processes share the cores).
    if polls:  # the main thread alone, or beside an idle thread: both waits poll their budget
        assert min(first, second) >= 0.1, f"{company}: the waits polled {first:.2f}, {second:.2f} s"
    elif company == "busy":  # polls held up: the first wait stops early, the next one sleeps
        assert first < 0.3 and second < 0.05, f"busy threads: polled {first:.2f}, {second:.2f} s"
    else:  # a thread per env: never polls
        assert first < 0.05 and second < 0.05, f"9 threads: polled {first:.2f}, {second:.2f} s"


def test_after_a_slow_reply_waits_sleep_until_one_is_quick(polling_server: LocalProvider) -> None:
    connection = Connection(polling_server.urls[0], token=polling_server.token, busy_wait=0.4)
    ws = connection._ws
    assert ws is not None
    try:
        started = time.process_time()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)  # slower than the budget: polled 0.4 s, then slept
        assert time.process_time() - started >= 0.2
        started = time.process_time()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)  # replies are slow here: this wait sleeps at once
        assert time.process_time() - started < 0.1
        # A quick reply (a refused MAKE, answered in well under 0.4 s) re-enables polling.
        with pytest.raises(RemoteError):
            connection.request(Op.MAKE, {"env_id": "NoSuchEnv-v0", "num_envs": 1}, timeout=5.0)
        assert ws._quick
    finally:
        connection.close()
