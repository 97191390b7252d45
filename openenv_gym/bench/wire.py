"""Bytes on the wire per step and codec cost, for a batched step reply."""

from __future__ import annotations

import time
from typing import Any

import gymnasium
import numpy as np

from openenv_gym.protocol import codec
from openenv_gym.protocol.messages import Status

__all__ = ["measure"]


def measure(env_id: str, *, num_envs: int = 256, repeats: int = 2000) -> dict[str, Any]:
    """Size of a real step reply of ``num_envs`` envs against its raw payload, and codec µs.

    The raw payload is the observation bytes plus one float64 reward and two bool flags per env;
    the reply is exactly what a server sends (request id, status, empty infos included), plus
    the WebSocket frame header.
    """
    envs = gymnasium.make_vec(env_id, num_envs, vectorization_mode="sync")
    try:
        envs.reset(seed=0)
        obs, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
    finally:
        envs.close()
    reply = [Status.OK.value, 123456, [obs, rewards, terminations, truncations, infos]]
    frame = codec.encode(reply)
    frame_header = 2 + (2 if len(frame) < 65536 else 8)  # server-to-client frames are unmasked
    payload = np.asarray(obs).nbytes + rewards.nbytes + terminations.nbytes + truncations.nbytes
    started = time.perf_counter()
    for _ in range(repeats):
        codec.encode(reply)
    encode_us = (time.perf_counter() - started) / repeats * 1e6
    started = time.perf_counter()
    for _ in range(repeats):
        codec.decode(frame)
    decode_us = (time.perf_counter() - started) / repeats * 1e6
    return {
        "num_envs": num_envs,
        "reply_bytes": len(frame) + frame_header,
        "payload_bytes": int(payload),
        "overhead_ratio": (len(frame) + frame_header) / payload,
        "bytes_per_env_step": (len(frame) + frame_header) / num_envs,
        "encode_us": encode_us,
        "decode_us": decode_us,
    }
