"""``openenv-gym bench --native``: the rows, ratios and profile it reports are the ones measured."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium
import pytest

from openenv_gym.bench.native import _markdown, pong_cpu
from openenv_gym.bench.native_cpu import cpu_per_step, gap_cost
from openenv_gym.bench.native_profile import profile_step
from openenv_gym.cli import main
from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.optional import require_module


def test_native_bench_reports_ratios_of_the_rates_it_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--native", "--no-engines", "--num-envs", "64", "--duration", "0.1"]
    assert main([*argv, "--repeats", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "native.json").read_text())
    rates = {row["backend"]: row["steps_per_second"] for row in report["cartpole"]}
    assert set(rates) == {
        "native in-process",
        "native remote (1 server)",
        "native remote (2 servers)",
        "SyncVectorEnv",
    }
    assert all(rate > 0 for rate in rates.values())
    ratio = report["ratios"]["native remote (1 server) / native in-process @ 64"]
    assert ratio == pytest.approx(rates["native remote (1 server)"] / rates["native in-process"])
    assert (tmp_path / "native.md").read_text() in capsys.readouterr().out


def test_native_profile_parts_add_up_to_the_measured_step() -> None:
    figures = profile_step(256, count=20, repeats=1)
    parts = [
        "env",
        "server codec + bookkeeping",
        "client codec",
        "syscalls + wire (raw TCP round trip)",
        "framing, event loop, scheduling",
    ]
    assert sum(figures[name] for name in parts) == pytest.approx(figures["remote step (measured)"])
    assert figures["env"] > 0 and figures["syscalls + wire (raw TCP round trip)"] > 0
    assert figures["reply bytes"] > 256 * (4 * 4 + 4 + 2)  # obs, rewards, flags of 256 envs


def test_native_cpu_counts_a_single_threaded_engine_on_the_stepping_thread() -> None:
    env = gymnasium.make_vec("CartPole-v1", 1024, vectorization_mode="vector_entry_point")
    try:
        figures = cpu_per_step(env, 0.5)
    finally:
        env.close()
    assert figures.steps > 0 and figures.server_main_ms is None
    # gymnasium's CartPole steps on the caller's thread: no engine thread, the caller busy.
    assert figures.engine_threads == 0 and figures.engine_ms == 0 and figures.engine_busy == 0
    assert figures.stepping_ms >= 0.5 * figures.wall_ms


def test_native_cpu_counts_engine_threads_in_process_and_on_the_server() -> None:
    require_module("ale_py", family="ale", install="pip install 'openenv-gym[ale]'")
    from ale_py.vector_env import AtariVectorEnv

    local = AtariVectorEnv("pong", 4, num_threads=2)
    try:
        in_process = cpu_per_step(local, 1.0)
    finally:
        local.close()
    assert in_process.engine_threads >= 1 and in_process.engine_ms > 0
    assert 0 < in_process.engine_busy <= 1.1  # CPU of n threads cannot pass n x wall (ticks)
    assert in_process.server_main_ms is None
    with LocalProvider(["ale:pong"]) as provider:
        remote_env = RemoteVectorEnv(
            "ale:pong",
            4,
            urls=provider.urls,
            token=provider.token,
            server_vectorization="vector_entry_point",
        )
        try:
            remote = cpu_per_step(remote_env, 1.0, server_pid=provider.pids[0])
        finally:
            remote_env.close()
    # The engine's threads are the server's now; its main thread and the client both work.
    assert remote.engine_threads >= 1 and remote.engine_ms > 0
    assert remote.server_main_ms is not None and remote.server_main_ms > 0
    assert remote.server_main_kernel_ms is not None
    assert 0 <= remote.server_main_kernel_ms <= remote.server_main_ms
    assert remote.stepping_ms > 0 and 0 <= remote.stepping_kernel_ms <= remote.stepping_ms


def test_native_cpu_counts_engine_threads_waiting_for_a_core() -> None:
    require_module("ale_py", family="ale", install="pip install 'openenv-gym[ale]'")
    from ale_py.vector_env import AtariVectorEnv

    cores = os.sched_getaffinity(0)
    waits = {}
    try:
        os.sched_setaffinity(0, {min(cores)})  # threads made from now on share one core
        for threads in (1, 2):
            env = AtariVectorEnv("pong", 4, num_threads=threads)
            try:
                waits[threads] = cpu_per_step(env, 1.0)
            finally:
                env.close()
    finally:
        os.sched_setaffinity(0, cores)
    alone, shared = waits[1], waits[2]
    assert alone.engine_wait_ms is not None and shared.engine_wait_ms is not None
    assert shared.engine_threads == 2
    # Two engine threads on one core: each waits for the other about half of a step; one
    # engine thread alone runs whenever it has work (the stepping thread sleeps meanwhile).
    assert shared.engine_wait_ms >= 0.25 * shared.wall_ms
    assert alone.engine_wait_ms <= 0.15 * alone.wall_ms < shared.engine_wait_ms


def test_native_pong_cpu_counts_every_pong_backend_remote_ones_on_their_server() -> None:
    require_module("ale_py", family="ale", install="pip install 'openenv-gym[ale]'")
    require_module("envpool", family="envpool", install="pip install 'openenv-gym[envpool]'")
    with LocalProvider(["ale:pong", "envpool:Pong-v5"]) as provider:
        figures = pong_cpu(provider, 4, 0.3)
    assert figures["reply_bytes"] > 4 * 4 * 84 * 84 > figures["request_bytes"]  # 4 envs' frames
    assert figures["tcp_round_trip_ms"] > 0
    assert set(figures["backends"]) == {
        "AtariVectorEnv (in-process)",
        "ale:pong remote (1 server)",
        "envpool Pong (in-process)",
        "envpool:Pong-v5 remote (1 server)",
    }
    for name, row in figures["backends"].items():
        assert row["steps"] > 0 and row["engine_threads"] >= 1, (name, row)
        assert (row["server_main_ms"] is None) == ("in-process" in name), (name, row)
    # The report's markdown shows every backend's row and the raw round trip.
    report = {
        "date": "d",
        "cores": 2,
        "python": "3",
        "command": "c",
        "cartpole": [],
        "cartpole_num_envs": [],
        "pong": [],
        "ratios": {},
        "pong_cpu": {"num_envs": 4, **figures},
    }
    markdown = _markdown(report)
    assert "## Pong at 4 envs: CPU per step by thread (ms)" in markdown
    for name, row in figures["backends"].items():
        assert f"| {name} | {row['wall_ms']:.2f} | {row['engine_ms']:.2f} " in markdown
        assert row["engine_wait_ms"] is not None, (name, row)
        assert f"at {row['engine_busy']:.0%}) | {row['engine_wait_ms']:.2f} |" in markdown
    assert f"back): {figures['tcp_round_trip_ms']:.2f} ms" in markdown
    # The gap is the CPU the remote ale:pong step added, and the bound is the one it implies.
    remote, gap = figures["backends"]["ale:pong remote (1 server)"], figures["gap"]
    assert gap["gap_ms"] == pytest.approx(remote["stepping_ms"] + remote["server_main_ms"])
    assert figures["bound"] == pytest.approx(
        gap["back_to_back_ms"] / (gap["after_sleeping_gap_ms"] + gap["gap_ms"])
    )
    assert f"sleeps: {figures['bound']:.2f}x" in markdown
    assert f"busy {gap['after_busy_gap_ms']:.2f}" in markdown


def test_native_gap_cost_times_the_step_alone_after_each_kind_of_gap() -> None:
    env = gymnasium.make_vec("CartPole-v1", 16, vectorization_mode="vector_entry_point")
    try:
        measured = gap_cost(env, 0.02, steps=5, repeats=3)
        with pytest.raises(ValueError, match="gap > 0"):
            gap_cost(env, 0.0)
    finally:
        env.close()
    assert measured.gap_ms == pytest.approx(20.0)
    # A CartPole step of 16 envs takes microseconds: a 20 ms pause counted in would show.
    for value in (
        measured.back_to_back_ms,
        measured.after_sleeping_gap_ms,
        measured.after_busy_gap_ms,
    ):
        assert 0 < value < 5.0, measured
