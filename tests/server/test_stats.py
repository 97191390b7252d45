"""ServerStats: counts by spec that never go down, the step rate, bounded error kinds."""

from __future__ import annotations

from openenv_gym.server.observe import merge_status
from openenv_gym.server.stats import LATENCY_BUCKETS, MAX_ERROR_TYPES, ServerStats


def _row(snapshot: dict, spec: str) -> dict:
    return next(row for row in snapshot["totals"] if row["spec"] == spec)


def test_server_stats_counters_never_go_down_when_a_session_builds_its_env() -> None:
    stats = ServerStats(specs=["CartPole-v1"])
    session = stats.open("binary")
    session.request("binary/HELLO", 10, 20)
    before = stats.snapshot()
    assert _row(before, "none")["requests"] == {}  # not yet counted anywhere
    assert _row(before, "none")["live_sessions"] == 1
    session.env_id, session.num_envs = "CartPole-v1", 4
    session.request("binary/MAKE", 30, 40)
    session.step(0.0003, 4)
    after = stats.snapshot()
    row = _row(after, "CartPole-v1")
    assert row["requests"] == {"binary/HELLO": 1, "binary/MAKE": 1}
    assert (row["steps"], row["live_envs"], row["bytes_in"], row["bytes_out"]) == (4, 4, 40, 60)
    assert row["latency_buckets"][LATENCY_BUCKETS.index(0.0005)] == 1
    stats.close(session)
    stats.close(session)  # idempotent
    closed = _row(stats.snapshot(), "CartPole-v1")
    assert (closed["steps"], closed["live_sessions"], closed["sessions_opened"]) == (4, 0, 1)


def test_server_stats_steps_per_s_is_measured_over_the_last_minute() -> None:
    stats = ServerStats()
    session = stats.open("binary")
    stats.sample(now=100.0)
    for _ in range(50):
        session.step(0.001, 2)
    stats.sample(now=110.0)
    assert stats.steps_per_s(now=110.0) == 100 / 10
    assert stats.rate_series() == [10.0]
    stats.sample(now=200.0)  # the samples of 100 and 110 are over a minute old now
    assert stats.steps_per_s(now=200.0) == 0.0


def test_server_stats_error_kinds_past_the_cap_count_as_other() -> None:
    stats = ServerStats()
    session = stats.open("binary")
    session.env_id = "CartPole-v1"
    for index in range(MAX_ERROR_TYPES + 5):
        stats.error(session, f"Error{index}", "x" * 10_000)
    errors = _row(stats.snapshot(), "CartPole-v1")["errors"]
    assert len(errors) == MAX_ERROR_TYPES + 1 and errors["other"] == 5
    recent = stats.snapshot()["recent_errors"]
    assert len(recent) <= 20 and all(len(error["message"]) <= 200 for error in recent)


def test_merge_status_adds_up_workers_and_keeps_their_sessions_apart() -> None:
    snapshots = []
    for worker in (0, 1):
        stats = ServerStats(worker=worker, specs=["CartPole-v1"])
        session = stats.open("binary")
        session.env_id, session.num_envs = "CartPole-v1", 1
        session.step(0.0001, 1)
        snapshots.append(stats.snapshot())
    merged = merge_status(snapshots)
    assert [s["worker"] for s in merged["sessions"]] == [0, 1]
    assert merged["live_envs"] == 2 and merged["totals"][0]["steps"] == 2
    assert [w["worker"] for w in merged["workers"]] == [0, 1]


def test_snapshot_dir_shows_a_silent_worker_counters_but_no_sessions(tmp_path) -> None:
    import json
    import time

    from openenv_gym.server.observe import STALE_AFTER, SnapshotDir

    stats = ServerStats(worker=1, specs=["CartPole-v1"])
    session = stats.open("binary")
    session.env_id, session.num_envs = "CartPole-v1", 1
    session.step(0.0001, 1)
    SnapshotDir(tmp_path, 1).write(stats.snapshot())
    (fresh,) = SnapshotDir(tmp_path, 0).others()
    assert len(fresh["sessions"]) == 1
    old = {**stats.snapshot(), "time": time.time() - STALE_AFTER - 1}
    (tmp_path / "worker-1.json").write_text(json.dumps(old))
    (stale,) = SnapshotDir(tmp_path, 0).others()
    assert stale["sessions"] == [] and stale["totals"][0]["live_sessions"] == 0
    assert stale["totals"][0]["steps"] == 1
