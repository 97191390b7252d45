"""MeteredSession in-process: what it counts for plain and unusually encoded requests."""

from __future__ import annotations

import numpy as np

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.metered import MeteredSession
from openenv_gym.server.session import Session
from openenv_gym.server.stats import ServerStats


def _request(op: Op, request_id: int, body: object) -> bytes:
    return codec.encode([op.value, request_id, body])


def _opened(stats: ServerStats) -> MeteredSession:
    session = MeteredSession(Session(EnvCatalog(["CartPole-v1"])), stats, specs=["CartPole-v1"])
    session.handle(_request(Op.HELLO, 1, {"protocol_version": PROTOCOL_VERSION}))
    session.handle(
        _request(Op.MAKE, 2, {"env_id": "CartPole-v1", "num_envs": 3, "autoreset_mode": "NextStep"})
    )
    session.handle(_request(Op.RESET, 3, {"seed": 0}))
    return session


def test_metered_session_counts_steps_of_every_env_and_errors_by_type() -> None:
    stats = ServerStats(specs=["CartPole-v1"])
    session = _opened(stats)
    for index in range(4):
        session.handle(_request(Op.STEP, 10 + index, np.zeros(3, dtype=np.int64)))
    session.handle(_request(Op.STEP, 20, np.zeros(2, dtype=np.int64)))  # wrong shape
    (row,) = [r for r in stats.snapshot()["totals"] if r["spec"] == "CartPole-v1"]
    assert row["steps"] == 12 and row["requests"]["binary/STEP"] == 5
    assert sum(row["latency_buckets"]) == 4
    assert sum(row["errors"].values()) == 1 and row["live_envs"] == 3
    session.close()
    (closed,) = [r for r in stats.snapshot()["totals"] if r["spec"] == "CartPole-v1"]
    assert (closed["live_sessions"], closed["steps"]) == (0, 12)


def test_metered_session_counts_a_request_whose_first_bytes_do_not_name_its_op() -> None:
    stats = ServerStats(specs=["CartPole-v1"])
    session = _opened(stats)
    plain = _request(Op.STEP, 30, np.zeros(3, dtype=np.int64))
    assert plain[0] == 0x93
    unusual = b"\xdc\x00\x03" + plain[1:]  # the same array of three, as an array 16
    reply = session.handle(unusual)
    assert codec.decode(reply)[0] == 0  # served
    (row,) = [r for r in stats.snapshot()["totals"] if r["spec"] == "CartPole-v1"]
    assert row["requests"]["binary/STEP"] == 1 and row["steps"] == 3
    session.handle(b"\xdc\x00\x03garbage")
    (row,) = [r for r in stats.snapshot()["totals"] if r["spec"] == "CartPole-v1"]
    assert row["requests"]["binary/unknown"] == 1 and row["steps"] == 3
