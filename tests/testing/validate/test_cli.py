"""``openenv-gym validate`` end to end: exit codes, the report on disk, plots, progress."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GOOD = "openenv_gym.testing.broken_envs:GoodEnv"


def _validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openenv_gym", "validate", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_validate_cli_writes_report_and_plots(tmp_path: Path) -> None:
    done = _validate(GOOD, "--level", "contract,quality", "--episodes", "4", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["exit_code"] == 0 and data["env_id"] == GOOD
    statuses = {check["check"]: check["status"] for check in data["checks"]}
    assert statuses["quality.reference_gap"] == "pass"  # GoodEnv's policy beats random
    random, reference = data["quality"]["random"], data["quality"]["reference"]
    assert reference["return_mean"] > random["return_mean"]
    assert len(random["lengths"]) == 4 and all(5 <= n <= 15 for n in random["lengths"])
    assert data["quality"]["step_latency"]["p50_ms"] > 0
    for name in ("rewards.png", "lengths.png", "latency_cdf.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| `contract.obs_in_space` | pass |" in (tmp_path / "report.md").read_text()
    assert "check/s" in done.stderr or "it/s" in done.stderr or "%" in done.stderr  # tqdm bar


def test_validate_cli_exit_1_names_the_check() -> None:
    done = _validate(
        "openenv_gym.testing.broken_envs:WrongDtypeEnv", "--level", "contract", "--json"
    )
    assert done.returncode == 1
    data = json.loads(done.stdout)
    failed = [check for check in data["checks"] if check["status"] == "fail"]
    assert "contract.obs_dtype" in {check["check"] for check in failed}


def test_validate_cli_exit_2_when_unreachable() -> None:
    done = _validate("no_such_module_for_validate:Env", "--level", "contract", "--no-progress")
    assert done.returncode == 2
    assert "Cannot reach the target" in done.stdout
