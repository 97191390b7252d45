"""``openenv-gym docker build``'s progress: every line kept, a live status line beside it."""

from __future__ import annotations

import io

from openenv_gym.cli.docker import build_progress


def test_build_progress_prints_every_line_and_finishes() -> None:
    out = io.StringIO()
    line, finish = build_progress(out)
    for text in ("$ pip wheel ...", "Step 1/9 : FROM openenv-gym-base:bookworm", "built"):
        line(text)
    finish()
    assert out.getvalue().splitlines() == [
        "$ pip wheel ...",
        "Step 1/9 : FROM openenv-gym-base:bookworm",
        "built",
    ]
