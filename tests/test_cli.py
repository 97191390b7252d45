"""The openenv-gym command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from openenv_gym.testing.optional import require_module


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openenv_gym", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_serve_without_specs_says_what_to_do() -> None:
    run = _run("serve")
    assert run.returncode == 2
    assert "--allow-any-id" in run.stderr


def test_cli_serve_unknown_spec_fails_cleanly() -> None:
    run = _run("serve", "NoSuchEnv-v3", "--port", "0")
    assert run.returncode == 1
    assert "cannot host 'NoSuchEnv-v3'" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_demo_runs_a_rollout_on_local_servers() -> None:
    run = _run("demo", "--num-envs", "8", "--servers", "2", "--steps", "50")
    assert run.returncode == 0, run.stderr
    assert "400 env-steps" in run.stdout and "2 local server(s)" in run.stdout


def test_cli_bench_quick_reports_measured_rates_ratios_and_openenv_rows(tmp_path: Path) -> None:
    require_module("openenv", family="openenv", install="pip install 'openenv-gym[bench]'")
    run = _run(
        "bench",
        "--quick",
        "--num-envs",
        "4",
        "16",
        "--backends",
        "sync",
        "remote",
        "openenv",
        "--servers",
        "1",
        "--duration",
        "0.2",
        "--latency-steps",
        "200",
        "--out",
        str(tmp_path),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    rates = {(r["backend"], r["num_envs"]): r["steps_per_second"] for r in report["throughput"]}
    for num_envs in (4, 16):
        for backend in ("SyncVectorEnv", "RemoteVectorEnv (1 server)"):
            assert rates[(backend, num_envs)] > 100, (backend, num_envs, rates)
    openenv_rows = {key: rate for key, rate in rates.items() if key[0].startswith("OpenEnv")}
    assert openenv_rows and all(rate > 10 for rate in openenv_rows.values()), rates
    ratios = report["ratios"]
    remote, sync = rates[("RemoteVectorEnv (1 server)", 16)], rates[("SyncVectorEnv", 16)]
    assert ratios["RemoteVectorEnv (1 server) / SyncVectorEnv @ 16"] == pytest.approx(remote / sync)
    best_ours = max(r for (b, _), r in rates.items() if b.startswith("RemoteVectorEnv"))
    assert ratios["best RemoteVectorEnv / best OpenEnv (any N sessions)"] == pytest.approx(
        best_ours / max(openenv_rows.values())
    )
    assert 1.0 <= ratios["wire bytes / raw payload @ 256 envs"] < 2.0
    assert (
        report["latency"]["ratio_p50"] > 0
        and report["start_to_ready"]["local process"]["median_s"] > 0
    )
    markdown = (tmp_path / "results.md").read_text()
    assert markdown in run.stdout  # the printed table is the one written
    for backend, _ in openenv_rows:
        assert f"| {backend} |" in markdown
