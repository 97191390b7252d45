"""Harbor (the sandboxed agent-evaluation framework) both ways; no ``harbor`` package needed.

* :class:`~openenv_gym.interop.harbor.env.HarborEnv`: a directory of Harbor task folders as a
  Gymnasium env (one container per episode; shell commands as actions; ``submit`` runs the
  task's tests as Harbor does and rewards what they write). Hosted with the spec
  ``harbor:/path/to/tasks`` (operator only), and as MCP tools (``run``, ``submit``).
* :mod:`~openenv_gym.interop.harbor.environment`: Harbor's ``BaseEnvironment`` backed by our
  server, so Harbor's own agents run on our sandboxes (``harbor run --env
  openenv_gym.interop.harbor.environment:OpenEnvGymEnvironment``; needs Harbor, Python >= 3.12).

Reading and running the task format needs only ``tomllib``, the Docker SDK (extra ``harbor``)
and the shell. Modules: ``task`` (the folder format, rewards), ``container`` (images built
offline, one confined container per episode), ``verifier`` (Harbor's verifier and oracle,
step for step), ``env``, ``hosting`` (the ``harbor:`` spec), ``environment``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HarborEnv", "HarborTask", "TaskDir", "load_task"]


def __getattr__(name: str) -> Any:
    # Lazy: the env imports gymnasium and the Docker SDK only when asked for.
    if name == "HarborEnv":
        from openenv_gym.interop.harbor.env import HarborEnv

        return HarborEnv
    if name in ("HarborTask", "TaskDir", "load_task"):
        from openenv_gym.interop.harbor import task

        return getattr(task, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
