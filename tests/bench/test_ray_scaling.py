"""``openenv-gym bench --ray``: both kinds of servers measured in one run, ratios of those rates."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from openenv_gym.testing.optional import require_module

require_module("ray", family="ray", install="pip install 'openenv-gym[ray]'")


@pytest.mark.slow
def test_bench_ray_measures_ray_and_local_servers_at_each_count(tmp_path: Path) -> None:
    args = ["bench", "--ray", "--num-envs", "16", "--servers", "1", "2"]
    args += ["--duration", "0.2", "--repeats", "1", "--out", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "-m", "openenv_gym", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "ray.json").read_text())
    rates = {row["backend"]: row["steps_per_second"] for row in report["throughput"]}
    assert set(rates) == {
        f"RemoteVectorEnv ({count}, {kind})"
        for count in ("1 server", "2 servers")
        for kind in ("local processes", "ray actors")
    }
    assert all(math.isfinite(rate) and rate > 0 for rate in rates.values()), rates
    for count in ("1 server", "2 servers"):
        ratio = report["ratios"][f"ray / local @ {count}, 16 envs"]
        want = (
            rates[f"RemoteVectorEnv ({count}, ray actors)"]
            / rates[f"RemoteVectorEnv ({count}, local processes)"]
        )
        assert ratio == pytest.approx(want)
    assert (tmp_path / "ray.md").read_text() in run.stdout
