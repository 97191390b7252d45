"""A verifiers taskset as a gymnasium env: one task per episode, one completion per episode.

``VerifiersTaskEnv("my_taskset")`` loads the taskset the way verifiers' own loaders do
(``verifiers.v1.utils.loaders``: an installed package or module exporting one ``Taskset``
subclass in ``__all__``, configured with its own ``TasksetConfig`` type) and reads its tasks
once (a finite taskset; an infinite one is read up to ``max_tasks``).

* ``reset(seed=...)`` picks a task with the env's ``np_random`` (reproducible under a seed)
  and observes its prompt as text (``TaskData.prompt_text``, system prompt first if any); the
  info names the task (``task_idx``, ``task_name``).
* ``step(completion)`` submits the model's reply: verifiers scores it with the task's own
  ``@vf.reward`` and ``@vf.metric`` functions (``Task.score``, no runtime: signals that need a
  sandbox are skipped, as verifiers does offline), on a trace whose reply is the completion.
  The reward is verifiers' weighted total (``Trace.reward``); the episode terminates; the info
  holds each reward and metric by name.

Single turn only: verifiers' multi-turn episodes are driven from inside verifiers (its
``Env.run`` calls the model through a client), so a step-by-step facade would have to stand
in for the model endpoint; that is not done here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import string
from collections.abc import Coroutine
from typing import Any

import gymnasium
from gymnasium import spaces

__all__ = ["TEXT_CHARSET", "VerifiersTaskEnv", "load_taskset"]

TEXT_CHARSET = string.printable
"""Characters of prompts and completions (ASCII printable and whitespace)."""


def _verifiers() -> Any:
    try:
        import verifiers.v1 as vf
    except ImportError as exc:
        raise ImportError(
            "hosting verifiers tasksets needs verifiers: pip install 'openenv-gym[verifiers]' "
            "&& pip install --no-deps verifiers==0.4.0"
        ) from exc
    return vf


def _taskset_class(taskset_id: str) -> type[Any]:
    """Return the ``Taskset`` subclass a module path exports (verifiers' rule: via ``__all__``).

    verifiers' own loader takes bare package names only; a dotted module path is imported
    here and checked by the same rule.

    Raises:
        ImportError: no such module.
        TypeError: it exports no ``Taskset`` subclass, or several.

    """
    vf = _verifiers()
    if "." not in taskset_id:
        from verifiers.v1.utils.loaders import taskset_class

        klass: type[Any] = taskset_class(taskset_id)
        return klass
    module = importlib.import_module(taskset_id)
    found = [
        obj
        for name in getattr(module, "__all__", ())
        if isinstance(obj := getattr(module, name, None), type)
        and issubclass(obj, vf.Taskset)
        and obj is not vf.Taskset
    ]
    if len(found) != 1:
        raise TypeError(
            f"taskset module {taskset_id!r} must export exactly one Taskset subclass in "
            f"__all__; found {[klass.__name__ for klass in found]}"
        )
    return found[0]


def load_taskset(taskset_id: str, **config: Any) -> Any:
    """Load a verifiers taskset by id, configured with its own config type.

    Args:
        taskset_id: an installed taskset package (verifiers' ids) or a dotted module path,
            exporting one ``Taskset`` subclass in ``__all__``.
        **config: fields of its ``TasksetConfig``.

    Raises:
        ImportError: verifiers is not installed, or no such taskset.
        TypeError: the module exports no single ``Taskset``.

    """
    vf = _verifiers()
    from verifiers.v1.utils.generic import concrete_type

    klass = _taskset_class(taskset_id)
    config_type = concrete_type(klass, vf.TasksetConfig, origin=vf.Taskset) or vf.TasksetConfig
    return klass(config_type(id=taskset_id, **config))


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the server's loop thread
        return pool.submit(asyncio.run, coroutine).result()


class VerifiersTaskEnv(gymnasium.Env[str, str]):
    """One verifiers task per episode: observe the prompt, submit one completion.

    Args:
        taskset: the taskset id (see :func:`load_taskset`).
        max_prompt: the observation space's longest text.
        max_completion: the action space's longest text.
        max_tasks: how many tasks are read from the taskset.
        **config: the taskset's config fields.

    Raises:
        ImportError: verifiers or the taskset cannot be imported.
        ValueError: the taskset yields no task.

    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        taskset: str,
        *,
        max_prompt: int = 8192,
        max_completion: int = 8192,
        max_tasks: int = 100_000,
        **config: Any,
    ) -> None:
        self.taskset_id = taskset
        loaded = load_taskset(taskset, **config)
        self.tasks = list(loaded.take(max_tasks) if not loaded.bounded else loaded)
        if not self.tasks:
            raise ValueError(f"taskset {taskset!r} yields no task")
        self.max_prompt = max_prompt
        self.observation_space = spaces.Text(max_prompt, min_length=0, charset=TEXT_CHARSET)
        self.action_space = spaces.Text(max_completion, min_length=0, charset=TEXT_CHARSET)
        self._task: Any = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Pick a task (``options={"task_idx": i}`` picks one by position); observe its prompt."""
        super().reset(seed=seed)
        chosen = (options or {}).get("task_idx")
        index = int(self.np_random.integers(len(self.tasks))) if chosen is None else int(chosen)
        if not 0 <= index < len(self.tasks):
            raise ValueError(f"task_idx must be in [0, {len(self.tasks)}), got {index}")
        self._task = self.tasks[index]
        data = self._task.data
        prompt = data.prompt_text
        if data.system_prompt:
            prompt = f"{data.system_prompt}\n\n{prompt}"
        return prompt[: self.max_prompt], {
            "task_idx": index,
            "task_name": data.name or "",
        }

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score ``action`` (the completion) with the task's own rewards; the episode ends.

        Raises:
            RuntimeError: no episode is running (step before reset, or after the completion).
            TypeError: the completion is not a string.

        """
        task, self._task = self._task, None
        if task is None:
            raise RuntimeError("step needs an episode: call reset first (one step per episode)")
        if not isinstance(action, str):
            raise TypeError(f"the completion must be str, got {type(action).__name__}")
        trace = self._trace(task, action)
        _run(task.score(trace))
        info = {
            "rewards": {k: float(v.score) for k, v in trace.rewards.items() if v is not None},
            "metrics": {k: float(v) for k, v in trace.metrics.items() if v is not None},
        }
        return "", float(trace.reward), True, False, info

    def _trace(self, task: Any, completion: str) -> Any:
        """Build the trace verifiers scores: the task, and the completion as the reply."""
        vf = _verifiers()
        from verifiers.v1.trace import AgentInfo, TraceTask

        trace = vf.Trace(
            task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
            agent=AgentInfo(config=vf.AgentConfig()),
        )
        trace.root_reply = completion
        return trace
