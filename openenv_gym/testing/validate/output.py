"""The report on disk: ``report.md``, ``report.json`` and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openenv_gym.testing.validate.results import Report

__all__ = ["markdown", "write_report"]


def markdown(report: Report) -> str:
    """Return the report as Markdown: a verdict, one table row per check, quality figures."""
    verdict = {0: "PASS", 1: "FAIL", 2: "UNREACHABLE"}[report.exit_code]
    lines = [f"# openenv-gym validate {report.target}", ""]
    lines += [
        f"**{verdict}** (exit {report.exit_code}); spec `{report.env_id}`; levels "
        f"{', '.join(report.levels)}",
        "",
    ]
    if report.unreachable:
        lines += [f"Cannot reach the target: {report.unreachable}", ""]
    if report.results:
        lines += ["| check | status | detail |", "|---|---|---|"]
        for r in report.results:
            detail = r.detail.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r.check}` | {r.status} | {detail} |")
        lines.append("")
    for name in report.plots:
        lines.append(f"![{Path(name).stem}]({Path(name).name})")
    return "\n".join(lines) + "\n"


def _plots(figures: dict[str, Any], out: Path) -> list[str]:
    """Write the reward histogram, episode lengths and latency CDF; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    policies = [(k, figures[k]) for k in ("random", "reference") if k in figures]
    for stem, key, xlabel in (
        ("rewards", "returns", "episode return"),
        ("lengths", "lengths", "episode length (steps)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, summary in policies:
            ax.hist(summary[key], bins=20, alpha=0.6, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("episodes")
        ax.legend()
        fig.tight_layout()
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    steps = np.sort(np.asarray(figures.get("step_seconds") or [0.0]) * 1000)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, np.arange(1, len(steps) + 1) / len(steps))
    ax.set_xscale("log")
    ax.set_xlabel("step latency (ms)")
    ax.set_ylabel("fraction of steps")
    fig.tight_layout()
    path = out / "latency_cdf.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(str(path))
    return written


def write_report(report: Report, out: Path) -> None:
    """Write ``report.md``, ``report.json`` and (with quality figures) the plots under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    if report.quality:
        report.plots = _plots(report.quality, out)
    data = report.to_json()
    if "step_seconds" in data["quality"]:
        del data["quality"]["step_seconds"]  # every step's latency: the plot holds it
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
