"""The status page in a real headless Chromium: it shows the live session of a stepping client.

Chromium (Debian's ``chromium`` package, installed by ``.ci/run``) loads ``/?token=...`` the way
a user would: the server trades the token for the view cookie, the page's script polls
``/status.json`` and fills its tables. The DOM after the script ran must name the session; a
screenshot is saved under pytest's temporary directory (its path is printed).
"""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import openenv_gym
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.optional import unavailable

TOKEN = "page-s3cret"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    unavailable("chromium", "no chromium binary (Debian: apt-get install chromium)")


class _Table(html.parser.HTMLParser):
    """Collect the cell texts of each row of the ``<tbody id=...>`` asked for."""

    def __init__(self, body_id: str) -> None:
        super().__init__()
        self.body_id = body_id
        self.rows: list[list[str]] = []
        self._inside = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody" and ("id", self.body_id) in attrs:
            self._inside = True
        elif self._inside and tag == "tr":
            self.rows.append([])
        elif self._inside and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._inside = False
        elif tag == "td" and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _browse(
    chromium: str, url: str, profile: Path, *action: str
) -> subprocess.CompletedProcess[str]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1100,760",
        # Virtual time runs until the page's fetches are answered and its timers have fired.
        "--virtual-time-budget=4000",
        *action,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


@pytest.fixture
def stepping(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A server and a client stepping CartPole on it; yields the URL and the session's id."""
    with LocalProvider(["CartPole-v1"], token=TOKEN) as provider:
        url = provider.urls[0]
        env = openenv_gym.RemoteEnv("CartPole-v1", url=url, token=TOKEN)
        stop = threading.Event()

        def step() -> None:
            env.reset(seed=0)
            for _ in range(200_000):  # bounded; stopped once the browser is done
                if stop.is_set():
                    return
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated:
                    env.reset()

        worker = threading.Thread(target=step)
        worker.start()
        try:
            request = urllib.request.Request(
                url.replace("ws://", "http://") + "/status.json",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                (session,) = json.loads(reply.read())["sessions"]
            yield url, int(session["id"])
        finally:
            stop.set()
            worker.join(30)
            env.close()


def test_status_page_in_chromium_shows_the_live_session(
    stepping: tuple[str, int], tmp_path: Path
) -> None:
    chromium = _chromium()
    url, session_id = stepping
    page = url.replace("ws://", "http://") + f"/?token={TOKEN}"
    dom = _browse(chromium, page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    sessions = _Table("sessions")
    sessions.feed(dom.stdout)
    rows = [row for row in sessions.rows if row and row[0] == f"#{session_id}"]
    assert rows, f"no row for session #{session_id} in {sessions.rows}"
    assert rows[0][2:5] == ["binary", "CartPole-v1", "1"]
    assert int(rows[0][5]) > 0  # env steps, filled in by the page's script
    totals = _Table("totals")
    totals.feed(dom.stdout)
    assert totals.rows and totals.rows[0][0] == "CartPole-v1"
    shot = tmp_path / "status.png"
    run = _browse(chromium, page, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")
