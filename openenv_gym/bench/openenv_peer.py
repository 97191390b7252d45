"""OpenEnv's side of the comparison: a gymnasium env served and driven by OpenEnv's own code.

The env is an OpenEnv ``Environment`` wrapping a gymnasium env (Discrete actions, Box
observations: CartPole-v1 by default) the way an OpenEnv author writes one: pydantic ``Action``
with an ``int`` field, ``Observation`` with the observation as ``list[float]`` and OpenEnv's own
``reward``/``done``, ``State`` with ``episode_id``/``step_count``. It is served by OpenEnv's
``create_app`` under uvicorn (defaults, so permessage-deflate is on as for any OpenEnv user) in
another process, and driven over OpenEnv's WebSocket ``/ws`` sessions by a typed ``EnvClient``
subclass: many async clients on one event loop for throughput, the ``.sync()`` wrapper (or the
async client) for latency.

OpenEnv (``openenv`` >= 0.10, formerly ``openenv-core`` 0.3) is optional: it is imported only
inside functions; :func:`available` says whether it can be used. It has no type stubs, so
every object from it is ``Any``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.metadata
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from openenv_gym.bench.throughput import ThroughputResult

__all__ = [
    "available",
    "distribution",
    "drive",
    "latency",
    "run",
    "serve",
    "serve_process",
    "throughput",
    "wire_bytes",
]

BACKEND_NAME = "OpenEnv (1 server)"
DEFAULT_MAX_SESSIONS = 1024


DISTRIBUTIONS = ("openenv", "openenv-core")
"""OpenEnv's PyPI names, newest first: ``openenv`` (>= 0.10) was ``openenv-core`` (<= 0.3)."""


def distribution() -> tuple[str, str] | None:
    """Return ``(name, version)`` of the installed OpenEnv distribution, or ``None``.

    Both install the same import package, ``openenv``; only one can be installed at a time.
    """
    for name in DISTRIBUTIONS:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def available() -> tuple[bool, str]:
    """Whether OpenEnv can be used here, and its version or why not (imports it: ~10 s)."""
    found = distribution()
    if found is None:
        return False, "OpenEnv is not installed (pip install openenv, or openenv-core==0.3.0)"
    label = " ".join(found)
    try:
        _types()
        importlib.import_module("uvicorn")
    except Exception as error:  # any failure to import means: skip, and say why
        return False, f"{label} is installed but not importable: {error!r}"
    return True, label


@functools.cache
def _types() -> SimpleNamespace:
    """OpenEnv's classes for a gymnasium env: Action, Observation, State, Environment, client."""
    server: Any = importlib.import_module("openenv.core.env_server")
    client_module: Any = importlib.import_module("openenv.core.env_client")
    step_result: Any = importlib.import_module("openenv.core.client_types").StepResult

    class GymAction(server.Action):  # type: ignore[misc]
        action: int

    class GymObservation(server.Observation):  # type: ignore[misc]
        observation: list[float]

    class GymState(server.State):  # type: ignore[misc]
        pass

    class GymEnvironment(server.Environment):  # type: ignore[misc]
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self, env_id: str = "CartPole-v1") -> None:
            import gymnasium

            super().__init__()
            self._env = gymnasium.make(env_id)
            self._state = GymState(step_count=0)

        def reset(
            self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any
        ) -> Any:
            obs, _ = self._env.reset(seed=seed)
            self._state = GymState(episode_id=episode_id, step_count=0)
            return GymObservation(observation=np.ravel(obs).tolist(), reward=None, done=False)

        def step(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
            obs, reward, terminated, truncated, _ = self._env.step(action.action)
            self._state.step_count += 1
            return GymObservation(
                observation=np.ravel(obs).tolist(),
                reward=float(reward),
                done=bool(terminated or truncated),
            )

        @property
        def state(self) -> Any:
            return self._state

        def close(self) -> None:
            self._env.close()

    class GymClient(client_module.EnvClient):  # type: ignore[misc]
        def _step_payload(self, action: Any) -> dict[str, Any]:
            return {"action": action.action}

        def _parse_result(self, payload: dict[str, Any]) -> Any:
            observation = GymObservation(
                observation=payload["observation"]["observation"],
                reward=payload.get("reward"),
                done=payload.get("done", False),
            )
            return step_result(
                observation=observation, reward=observation.reward, done=observation.done
            )

        def _parse_state(self, payload: dict[str, Any]) -> Any:
            return GymState(**payload)

    return SimpleNamespace(
        server=server,
        Action=GymAction,
        Observation=GymObservation,
        State=GymState,
        Environment=GymEnvironment,
        Client=GymClient,
    )


def _serve_main(env_id: str, max_sessions: int, fd: int) -> None:
    """Child process: OpenEnv's ``create_app`` under uvicorn on the listening socket ``fd``."""
    import uvicorn

    types = _types()
    factory = functools.partial(types.Environment, env_id)
    app = types.server.create_app(
        factory, types.Action, types.Observation, max_concurrent_envs=max_sessions
    )
    sock = socket.socket(fileno=fd)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/health", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def serve(
    env_id: str = "CartPole-v1",
    *,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    startup_timeout: float = 90.0,
) -> Iterator[str]:
    """Run an OpenEnv server for ``env_id`` in another process; yield ``http://127.0.0.1:port``.

    Raises:
        RuntimeError: the server exited or did not answer ``/health`` within ``startup_timeout``.

    """

    def argv(fd: int) -> list[str]:
        code = (
            "from openenv_gym.bench.openenv_peer import _serve_main; "
            f"_serve_main({env_id!r}, {max_sessions}, {fd})"
        )
        return [sys.executable, "-c", code]

    with serve_process(
        argv, startup_timeout=startup_timeout, what=f"OpenEnv server for {env_id}"
    ) as url:
        yield url


@contextmanager
def serve_process(
    argv: Callable[[int], list[str]], *, startup_timeout: float, what: str = "OpenEnv server"
) -> Iterator[str]:
    """Run ``argv(fd)`` serving HTTP on the inherited socket ``fd``; yield its URL.

    The socket is bound here (127.0.0.1, a free port), so there is no free-port race; the
    server is ready once ``GET /health`` answers 200.

    Raises:
        RuntimeError: the server exited or was not ready within ``startup_timeout``.

    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, tempfile.TemporaryFile() as log:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        process = subprocess.Popen(
            argv(sock.fileno()),
            pass_fds=[sock.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _types()  # import openenv here while the server imports it (seconds each: gradio)
            deadline = time.monotonic() + startup_timeout
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"{what} not ready within {startup_timeout} s "
                        f"(exit code {process.poll()}):\n{tail}"
                    )
                time.sleep(0.1)  # between /health polls; the deadline bounds the loop
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _connect(url: str, count: int) -> list[Any]:
    clients = [_types().Client(base_url=url) for _ in range(count)]
    await asyncio.gather(*(client.connect() for client in clients))
    return clients


async def _close(clients: Sequence[Any]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def drive(client: Any, action: Any, deadline: float) -> int:
    """Step an OpenEnv client until ``deadline``, resetting after each done; count round trips.

    A reset after done counts, as our vector envs' autoreset happens inside a counted step.
    """
    calls = 0
    while time.perf_counter() < deadline:
        result = await client.step(action)
        calls += 1
        if result.done:
            await client.reset()
            calls += 1
    return calls


async def _aggregate_rate(url: str, num_sessions: int, duration: float, warmup_steps: int) -> float:
    types = _types()
    clients = await _connect(url, num_sessions)
    try:
        actions = [types.Action(action=i % 2) for i in range(num_sessions)]
        await asyncio.gather(*(c.reset(seed=i) for i, c in enumerate(clients)))
        for _ in range(warmup_steps):
            await asyncio.gather(*(c.step(a) for c, a in zip(clients, actions, strict=True)))
        started = time.perf_counter()
        deadline = started + duration
        calls = await asyncio.gather(
            *(drive(c, a, deadline) for c, a in zip(clients, actions, strict=True))
        )
        return sum(calls) / (time.perf_counter() - started)
    finally:
        await _close(clients)


def throughput(
    url: str,
    num_sessions_list: Sequence[int],
    *,
    duration: float,
    repeats: int,
    warmup_steps: int = 20,
    progress: Callable[[str], None] | None = None,
) -> list[ThroughputResult]:
    """Aggregate env-steps/s of ``N`` concurrent OpenEnv sessions, for each ``N``; median kept.

    Each session is its own async ``EnvClient`` (one WebSocket, one server-side env), all driven
    concurrently on one event loop; session ``i`` always sends action ``i % 2``. When an episode
    ends the client calls ``reset()``; that round trip counts as an env-step, mirroring
    gymnasium's next-step autoreset in the vector backends, where the reset is a counted step.
    """
    samples: dict[int, list[float]] = {}
    for repeat in range(repeats):
        for num_sessions in num_sessions_list:
            rate = asyncio.run(_aggregate_rate(url, num_sessions, duration, warmup_steps))
            samples.setdefault(num_sessions, []).append(rate)
            if progress is not None:
                progress(f"repeat {repeat + 1}/{repeats}: {BACKEND_NAME} x{num_sessions}")
    return [
        ThroughputResult(BACKEND_NAME, n, statistics.median(rates), rates)
        for n, rates in samples.items()
    ]


def _percentiles(times: Sequence[float]) -> tuple[float, float]:
    micros = np.asarray(times) * 1e6
    return float(np.percentile(micros, 50)), float(np.percentile(micros, 99))


def _sync_step_times(url: str, steps: int, warmup: int) -> list[float]:
    types = _types()
    action = types.Action(action=0)
    times = []
    with types.Client(base_url=url).sync() as client:
        client.reset(seed=0)
        for i in range(warmup + steps):
            started = time.perf_counter()
            result = client.step(action)
            if i >= warmup:
                times.append(time.perf_counter() - started)
            if result.done:
                client.reset()
    return times


async def _async_step_times(url: str, steps: int, warmup: int) -> list[float]:
    types = _types()
    action = types.Action(action=0)
    times = []
    (client,) = await _connect(url, 1)
    try:
        await client.reset(seed=0)
        for i in range(warmup + steps):
            started = time.perf_counter()
            result = await client.step(action)
            if i >= warmup:
                times.append(time.perf_counter() - started)
            if result.done:
                await client.reset()
    finally:
        await _close([client])
    return times


def latency(
    url: str,
    steps: int,
    *,
    repeats: int = 1,
    client: Literal["sync", "async"] = "sync",
    warmup: int = 200,
) -> dict[str, float]:
    """Single-session ``step`` latency (µs), p50 and p99, medians over ``repeats``.

    ``client="sync"`` times OpenEnv's ``.sync()`` wrapper (the counterpart of ``RemoteEnv.step``);
    ``"async"`` times ``await EnvClient.step`` on a plain event loop. Resets are not timed.
    """
    p50s, p99s = [], []
    for _ in range(repeats):
        if client == "sync":
            times = _sync_step_times(url, steps, warmup)
        else:
            times = asyncio.run(_async_step_times(url, steps, warmup))
        p50, p99 = _percentiles(times)
        p50s.append(p50)
        p99s.append(p99)
    return {"p50_us": statistics.median(p50s), "p99_us": statistics.median(p99s)}


class _CountingRelay:
    """A loopback TCP relay to ``port`` that counts the bytes it forwards each way."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.up = 0  # client -> server
        self.down = 0  # server -> client

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if upstream:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)
        await asyncio.gather(
            self._pipe(reader, server_writer, True), self._pipe(server_reader, writer, False)
        )


async def _wire_bytes(url: str, steps: int) -> dict[str, Any]:
    types = _types()
    relay = _CountingRelay(int(url.rsplit(":", 1)[1]))
    relay_server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    relay_port = relay_server.sockets[0].getsockname()[1]
    (client,) = await _connect(f"http://127.0.0.1:{relay_port}", 1)
    texts: dict[str, int] = {}
    try:
        ws = client._ws
        extensions = [type(e).__name__ for e in getattr(ws.protocol, "extensions", [])]
        recv = ws.recv

        async def recv_and_measure(*args: Any, **kwargs: Any) -> Any:
            raw = await recv(*args, **kwargs)
            texts["reply"] = len(raw.encode() if isinstance(raw, str) else raw)
            return raw

        ws.recv = recv_and_measure
        await client.reset(seed=0)
        action = types.Action(action=0)
        texts["request"] = len(
            json.dumps({"type": "step", "data": client._step_payload(action)}).encode()
        )
        up = down = 0
        for _ in range(steps):
            up0, down0 = relay.up, relay.down
            result = await client.step(action)
            up += relay.up - up0
            down += relay.down - down0
            if result.done:
                await client.reset()
    finally:
        await _close([client])
        relay_server.close()
    return {
        "request_bytes": up / steps,
        "reply_bytes": down / steps,
        "bytes_per_step": (up + down) / steps,
        "request_json_bytes": texts["request"],
        "reply_json_bytes": texts["reply"],
        "extensions": extensions,
    }


def wire_bytes(url: str, steps: int = 200) -> dict[str, Any]:
    """Bytes on the wire per env-step of one OpenEnv session, captured from the real traffic.

    The client talks to the server through a counting loopback relay, so ``request_bytes`` and
    ``reply_bytes`` are the TCP payload bytes of one ``step`` each way (WebSocket headers and
    masking included, after the permessage-deflate the two sides negotiate; see
    ``extensions``), averaged over ``steps`` steps; resets are excluded. ``*_json_bytes`` are the
    uncompressed JSON texts of the last step request and reply, as the client sent and received
    them.
    """
    return asyncio.run(_wire_bytes(url, steps))


def run(
    env_id: str,
    num_sessions_list: Sequence[int],
    *,
    duration: float,
    repeats: int,
    latency_steps: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Serve ``env_id`` once; measure throughput, sync and async latency and wire bytes."""
    with serve(env_id, max_sessions=max(DEFAULT_MAX_SESSIONS, 2 * max(num_sessions_list))) as url:
        rates = throughput(
            url, num_sessions_list, duration=duration, repeats=repeats, progress=progress
        )
        sync = latency(url, latency_steps, repeats=repeats)
        asynchronous = latency(url, latency_steps, repeats=repeats, client="async")
        size = wire_bytes(url)
    return {
        "version": available()[1],
        "throughput": rates,
        "latency_sync": sync,
        "latency_async": asynchronous,
        "wire": size,
    }
