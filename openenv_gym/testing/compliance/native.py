"""Native engine sessions, attacked from a client: actions and CALLs C++ engines do not survive.

The target hosts ``envpool:CartPole-v1`` and ``ale:pong``. envpool aborts its process on a
batch of the wrong size and crashes on an action out of range; ale-py's ``AtariVectorEnv``
hangs on one, and a ``recv`` without a ``send`` blocks for ever. Each such request must come
back as a typed error while the session and the server live on.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from openenv_gym.client.vector_env import RemoteVectorEnv
from openenv_gym.errors import AttributeNotAllowedError, InvalidActionError, OpenEnvError
from openenv_gym.protocol.messages import Op
from openenv_gym.testing.compliance._support import AttackResult, Target, failed, result

__all__ = ["NATIVE_SPECS", "attack_native_engine_requests"]

NATIVE_SPECS = ("envpool:CartPole-v1", "ale:pong")
"""What the target hosts."""
_CALL_TIMEOUT = 10.0  # a request that hangs its engine fails the attack within this


def _refusal(call: Any, kind: type[BaseException]) -> bool:
    """Run ``call``; tell whether it raised a typed error of ``kind`` (other errors: no)."""
    try:
        call()
    except kind:
        return True
    except OpenEnvError:
        return False
    return False


def _native(target: Target, env_id: str) -> RemoteVectorEnv:
    env = RemoteVectorEnv(
        env_id,
        2,
        urls=[target.url],
        token=target.token,
        server_vectorization="vector_entry_point",
        call_timeout=_CALL_TIMEOUT,
    )
    env.reset(seed=0)
    return env


def attack_native_engine_requests(target: Target) -> AttackResult:
    """Out-of-range actions, a batch of the wrong size, CALLs of the engines' own operations."""
    name = "native_engine_requests"
    started = time.monotonic()
    checks: dict[str, bool] = {}
    try:
        for env_id, action in (("envpool:CartPole-v1", 10**9), ("ale:pong", 6), ("ale:pong", -1)):
            env = _native(target, env_id)
            try:
                checks[f"{env_id} action {action} refused"] = _refusal(
                    lambda e=env, a=action: e.step(np.full(2, a)), InvalidActionError
                )
                env.step(np.zeros(2, dtype=np.int64))
            finally:
                env.close()
        env = _native(target, "envpool:CartPole-v1")
        try:
            connection = env._shards[0].connection  # past the client's own shape check
            checks["a batch of 1 for 2 envs refused"] = _refusal(
                lambda: connection.request(Op.STEP, np.zeros(1, dtype=np.int64)),
                InvalidActionError,
            )
            env.step(np.zeros(2, dtype=np.int64))
        finally:
            env.close()
        env = _native(target, "ale:pong")
        try:
            for method in ("recv", "send", "close_extras", "step"):
                checks[f"call {method!r} refused"] = _refusal(
                    lambda m=method: env.call(m), AttributeNotAllowedError
                )
            env.step(np.zeros(2, dtype=np.int64))
        finally:
            env.close()
        fresh = _native(target, "ale:pong")
        fresh.close()
        checks["a fresh session still works"] = True
    except OpenEnvError as exc:
        return failed(name, exc, {"seconds": time.monotonic() - started})
    return result(name, checks, {"checks": len(checks), "seconds": time.monotonic() - started})
