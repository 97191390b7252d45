"""``openenv-gym bench --native``: the rows, ratios and profile it reports are the ones measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openenv_gym.bench.native_profile import profile_step
from openenv_gym.cli import main


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
