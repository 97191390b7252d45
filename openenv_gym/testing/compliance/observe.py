"""Attacks on the observation routes (``/metrics``, ``/status.json``, the status page ``/``).

Each takes a live :class:`Target` and returns an :class:`AttackResult`, like every attack of
the campaign (see :mod:`.attacks`): the routes must need the token (or the view cookie the
page trades it for, which in turn must drive no env), refuse foreign origins and rebound
hosts, bound what a request can make the server read, and a storm of scrapes must not hurt a
client that steps meanwhile. Loopback only; every loop bounded in count and time.
"""

from __future__ import annotations

import concurrent.futures
import time

from openenv_gym.server.observe import VIEW_COOKIE, view_key
from openenv_gym.testing.compliance._support import (
    AttackResult,
    GoodClient,
    Target,
    failed,
    http_status,
    not_runnable,
    result,
)

__all__ = [
    "attack_observe_huge_request",
    "attack_observe_origin_and_host",
    "attack_observe_scrape_storm",
    "attack_observe_without_token",
]

ROUTES = ("/metrics", "/status.json", "/")


def _get(
    target: Target, path: str, headers: list[tuple[str, str]], *, host: str = "127.0.0.1"
) -> int:
    return http_status(target.url, path=path, headers=headers, host=host, upgrade=False)[0]


def attack_observe_without_token(target: Target) -> AttackResult:
    """Read the routes with no, a wrong or a forged credential: 401 every time.

    The target requires a token (``target.token``). Also: ``?token=`` counts on ``/`` only,
    and the view cookie (a real one) opens no WebSocket session.
    """
    name = "observe_without_token"
    if target.token is None:
        return not_runnable(name, "the target requires no token")
    forged = [("Cookie", f"{VIEW_COOKIE}={view_key('guess')}")]
    real = [("Cookie", f"{VIEW_COOKIE}={view_key(target.token)}")]
    try:
        figures: dict[str, int] = {}
        for path in ROUTES:
            figures[f"{path}_none"] = _get(target, path, [])
            figures[f"{path}_wrong_bearer"] = _get(target, path, [("Authorization", "Bearer x")])
            figures[f"{path}_forged_cookie"] = _get(target, path, forged)
        figures["/_wrong_query_token"] = _get(target, "/?token=guess", [])
        figures["/metrics_query_token"] = _get(target, f"/metrics?token={target.token}", [])
        figures["upgrade_with_view_cookie"] = http_status(target.url, headers=real)[0]
        figures["status_with_view_cookie"] = _get(target, "/status.json", real)
    except OSError as exc:
        return failed(name, exc)
    checks = {
        f"{key.replace('_', ' ')} answered 401": status == 401
        for key, status in figures.items()
        if key != "status_with_view_cookie"
    }
    checks["the real view cookie reads /status.json (200)"] = (
        figures["status_with_view_cookie"] == 200
    )
    return result(name, checks, figures)


def attack_observe_origin_and_host(target: Target) -> AttackResult:
    """Read the routes from a foreign page (``Origin``) or a rebound name (``Host``): refused.

    The target is a tokenless loopback server (where these checks are all that guard the
    routes), started with no ``--allow-origin``.
    """
    name = "observe_origin_and_host"
    evil = [("Origin", "http://evil.example")]
    try:
        figures: dict[str, int] = {}
        for path in ROUTES:
            figures[f"{path}_plain"] = _get(target, path, [])
            figures[f"{path}_origin"] = _get(target, path, evil)
            figures[f"{path}_host"] = _get(target, path, [], host="evil.example")
    except OSError as exc:
        return failed(name, exc)
    checks: dict[str, bool] = {}
    for path in ROUTES:
        checks[f"{path} answers a plain GET (200)"] = figures[f"{path}_plain"] == 200
        checks[f"{path} refuses a foreign Origin (403)"] = figures[f"{path}_origin"] == 403
        checks[f"{path} refuses Host evil.example (403)"] = figures[f"{path}_host"] == 403
    return result(name, checks, figures)


def attack_observe_huge_request(target: Target) -> AttackResult:
    """Send a 1 MiB query string, a 64 KiB ``?token=`` and a 64 KiB cookie: refused fast.

    The server must answer each with a 4xx (or close) within a second and go on serving.
    """
    name = "observe_huge_request"
    huge = "x" * (1 << 20)
    try:
        started = time.monotonic()
        query = _get(target, f"/status.json?{huge}", [])
        token = _get(target, "/?token=" + "y" * (1 << 16), [])
        cookie = _get(target, "/status.json", [("Cookie", f"{VIEW_COOKIE}={'z' * (1 << 16)}")])
        seconds = time.monotonic() - started
        after = _get(
            target,
            "/status.json",
            [("Authorization", f"Bearer {target.token}")] if target.token else [],
        )
    except OSError as exc:
        return failed(name, exc)

    def refused(status: int) -> bool:
        return status == 0 or 400 <= status < 500

    return result(
        name,
        {
            "a 1 MiB query is refused": refused(query),
            "a 64 KiB token is refused": refused(token),
            "a 64 KiB cookie is refused": refused(cookie),
            "all three answered within 3 s": seconds < 3.0,
            "the server still answers /status.json (200)": after == 200,
        },
        {"query": query, "token": token, "cookie": cookie, "seconds": seconds, "after": after},
    )


def attack_observe_scrape_storm(
    target: Target, *, scrapes: int = 400, threads: int = 8, seconds: float = 10.0
) -> AttackResult:
    """Scrape ``/metrics`` and ``/status.json`` from many threads while a client steps.

    Every scrape must be answered and the stepping client's p50 must stay under 200 ms
    (max under 1 s): rendering the figures is bounded work that cannot starve sessions.
    """
    name = "observe_scrape_storm"
    headers = [("Authorization", f"Bearer {target.token}")] if target.token else []
    deadline = time.monotonic() + seconds

    def scrape(index: int) -> int:
        if time.monotonic() > deadline:
            return -1  # past the time bound: not sent
        return _get(target, ("/metrics", "/status.json")[index % 2], headers)

    try:
        with GoodClient(target) as good:
            with good.window(), concurrent.futures.ThreadPoolExecutor(threads) as pool:
                statuses = list(pool.map(scrape, range(scrapes)))
            figures = good.figures()
    except OSError as exc:
        return failed(name, exc)
    sent = [status for status in statuses if status != -1]
    answered = sum(status == 200 for status in sent)
    figures.update(scrapes_sent=len(sent), scrapes_answered=answered)
    worst = figures["good_client_max_ms"]
    return result(
        name,
        {
            "every scrape was answered 200": answered == len(sent) > 0,
            "steps p50 < 200 ms meanwhile": good.ok(),
            "no step stalled for 1 s": worst is not None and worst < 1000,
        },
        figures,
    )
