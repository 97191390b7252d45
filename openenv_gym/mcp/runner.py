"""Tool calls off the event loop: worker threads, one call at a time on the env, deadlines.

Python cannot kill a thread: a call that outlives its deadline is answered with a
:class:`ToolTimeoutError` and runs on until it returns, holding the env, so later calls wait for
it (each within its own deadline) and a tool that never returns makes the env unusable until the
server restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from openenv_gym.errors import OpenEnvError
from openenv_gym.mcp.registry import ToolRegistry

__all__ = ["DEFAULT_TOOL_THREADS", "DEFAULT_TOOL_TIMEOUT", "ToolRunner", "ToolTimeoutError"]

DEFAULT_TOOL_TIMEOUT = 30.0
"""Seconds a tool call may take before the agent gets a tool error."""

DEFAULT_TOOL_THREADS = 4
"""Worker threads for tool calls; calls beyond them (e.g. behind hung ones) wait their turn."""


class ToolTimeoutError(OpenEnvError, TimeoutError):
    """A tool call did not return within its deadline (it may still be running on its thread)."""

    def __init__(self, tool: str, elapsed: float, timeout: float) -> None:
        super().__init__(tool, elapsed, timeout)
        self.tool = tool
        self.elapsed = elapsed
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"tool {self.tool!r} did not return within {self.timeout:g} s (elapsed "
            f"{self.elapsed:.1f} s); it cannot be stopped and holds the env until it returns"
        )


class ToolRunner:
    """Run a registry's tools off the event loop: on worker threads, one at a time, with deadlines.

    Each call gets its own daemon thread (at most ``threads`` alive at once), so a tool that
    never returns cannot hold up the process's exit either.

    Args:
        registry: the tools.
        timeout: seconds a call may take, waiting for a thread and for the env included.
        threads: worker threads; a call finding all of them busy waits (within its deadline).

    Raises:
        ValueError: ``timeout`` or ``threads`` is not positive.

    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        timeout: float = DEFAULT_TOOL_TIMEOUT,
        threads: int = DEFAULT_TOOL_THREADS,
    ) -> None:
        if timeout <= 0 or threads <= 0:
            raise ValueError(
                f"tool timeout and threads must be positive, got timeout={timeout}, "
                f"threads={threads}"
            )
        self.registry = registry
        self.timeout = timeout
        self._env_lock = threading.Lock()  # one env: two tool calls never run on it at once
        self._threads = asyncio.Semaphore(threads)

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call tool ``name`` on a worker thread; return its JSON result.

        Raises:
            ToolTimeoutError: no result within ``timeout`` seconds (the thread runs on).
            KeyError: no such tool in this mode.
            Exception: whatever the tool raises.

        """
        import anyio

        start = time.monotonic()
        deadline = start + self.timeout
        try:
            with anyio.fail_after(self.timeout):
                await self._threads.acquire()  # released by the thread when the tool returns
                return await self._start(name, arguments, deadline)
        except TimeoutError as exc:
            raise ToolTimeoutError(name, time.monotonic() - start, self.timeout) from exc

    def _start(self, name: str, arguments: dict[str, Any], deadline: float) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            self._threads.release()
            if future.done():  # its caller gave up (timeout or cancellation)
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        def work() -> None:
            result, error = None, None
            try:
                result = self._call_holding_env(name, arguments, deadline)
            except BaseException as exc:  # handed to the caller, raised there
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=work, name=f"openenv-gym-mcp-{name}", daemon=True).start()
        return future

    def _call_holding_env(self, name: str, arguments: dict[str, Any], deadline: float) -> Any:
        start = time.monotonic()
        if not self._env_lock.acquire(timeout=max(0.0, deadline - start)):
            raise ToolTimeoutError(name, time.monotonic() - start, self.timeout)
        try:
            if time.monotonic() >= deadline:  # its caller has given up: do not act for it
                raise ToolTimeoutError(name, time.monotonic() - start, self.timeout)
            return self.registry.call(name, arguments)
        finally:
            self._env_lock.release()
