"""The openenv-gym command line."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openenv_gym", *args], capture_output=True, text=True, timeout=120
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


def test_cli_bench_quick_writes_results(tmp_path) -> None:
    run = _run(
        "bench",
        "--quick",
        "--num-envs",
        "4",
        "--backends",
        "sync",
        "remote",
        "--servers",
        "1",
        "--duration",
        "0.2",
        "--latency-steps",
        "200",
        "--out",
        str(tmp_path),
    )
    assert run.returncode == 0, run.stderr
    assert "RemoteVectorEnv (1 server)" in run.stdout
    assert (tmp_path / "results.json").exists() and (tmp_path / "results.md").exists()
