"""HarborEnv: a directory of Harbor tasks as a Gymnasium env, one container per episode.

``reset`` picks a task (``options={"task": NAME}``, a folder name of the operator's directory,
or one drawn with the seeded ``np_random``), builds its image if needed (offline, cached by
content: :mod:`~openenv_gym.interop.harbor.container`), starts the episode's container and
observes the instruction (as the first observation's ``stdout``; in full in
``info["instruction"]``). Actions are shell commands (TerminalEnv's action space and
observation space), run by ``bash -c`` in the container's working directory, each with its
timeout. The action ``"submit"`` (also the tool :meth:`HarborEnv.submit`) runs the task's
verifier exactly as Harbor does (:mod:`~openenv_gym.interop.harbor.verifier`) and ends the
episode (``terminated``) with its reward; running out of commands (``max_steps``) or of the
task's ``[agent] timeout_sec`` runs the verifier too (Harbor grades what the agent left when it
timed out) and ends the episode as ``truncated``. Rewards are 0.0 before.

The reward is the verifier's ``reward`` component (``reward.txt``, or the ``reward`` key of
``reward.json``); a ``reward.json`` without that key gives the mean of its components. Every
component is in ``info["rewards"]``; a verifier that failed (no reward file, a timeout) gives
0.0 and says why in ``info["verifier_error"]``.

Operator switches (fixed kwargs in a hosting file; a client cannot set them): ``oracle=True``
enables the action ``"oracle"`` (runs ``solution/solve.sh`` as Harbor's oracle agent does);
``sandbox_api=True`` enables :meth:`exec`, :meth:`upload` and :meth:`download`, the calls
behind :class:`~openenv_gym.interop.harbor.environment.OpenEnvGymEnvironment` (Harbor's agents
on our sandboxes), which run outside the step budget.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Collection, Mapping
from typing import Any

import gymnasium
from gymnasium import spaces

from openenv_gym.envs.terminal import (
    CHARSET,
    MAX_COMMAND_LENGTH,
    _check_command,
    _observe,
)
from openenv_gym.interop.harbor.container import (
    ContainerLimits,
    TaskContainer,
    image_for,
)
from openenv_gym.interop.harbor.task import HarborTask, TaskDir, resolve_env
from openenv_gym.interop.harbor.verifier import run_oracle, run_verifier
from openenv_gym.providers.docker_image import _docker_client
from openenv_gym.tools import tool

__all__ = ["MAX_TRANSFER_BYTES", "ORACLE_ACTION", "SUBMIT_ACTION", "HarborEnv"]

SUBMIT_ACTION = "submit"
"""The action that ends the episode and runs the verifier (surrounding whitespace ignored)."""
ORACLE_ACTION = "oracle"
"""The action that runs the task's ``solution/solve.sh`` (only where the operator enables it)."""
MAX_TRANSFER_BYTES = 64 << 20
"""Bytes :meth:`HarborEnv.upload` and :meth:`HarborEnv.download` move in one call, at most."""


class HarborEnv(gymnasium.Env[dict[str, Any], str]):
    """Harbor tasks as episodes (module docstring).

    Args:
        tasks: the operator's directory of task folders (or a :class:`TaskDir`).
        task: the task a ``reset`` without ``options["task"]`` starts (``None``: one drawn with
            ``np_random``); e.g. fixed by the operator for an MCP endpoint in production mode.
        max_steps: commands per episode; the verifier runs after the last.
        timeout: seconds each command may run (also capped by the task's remaining
            ``[agent] timeout_sec``).
        max_output: characters of stdout and of stderr observed.
        oracle: enable the ``"oracle"`` action.
        sandbox_api: enable :meth:`exec`, :meth:`upload`, :meth:`download`.
        env_allow: server environment variables a task's ``${VAR}`` templates may read.
        limits: container limits (:class:`ContainerLimits`, or its keyword arguments as a
            table, e.g. ``limits = { max_cpus = 4, pids = 256 }`` in a hosting file; default:
            1 CPU and 2 GB when a task says nothing, at most 2 CPUs and 4 GB, 512 pids, no
            network).
        render_mode: ``"ansi"`` renders the last command and its output.

    Raises:
        TaskFormatError: the directory holds no valid task.

    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        tasks: str | os.PathLike[str] | TaskDir,
        *,
        task: str | None = None,
        max_steps: int = 64,
        timeout: float = 60.0,
        max_output: int = 4096,
        oracle: bool = False,
        sandbox_api: bool = False,
        env_allow: Collection[str] = (),
        limits: ContainerLimits | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if max_steps < 1 or max_output < 1 or timeout <= 0:
            raise ValueError(
                f"max_steps and max_output must be >= 1 and timeout > 0, got max_steps="
                f"{max_steps}, max_output={max_output}, timeout={timeout}"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.tasks = tasks if isinstance(tasks, TaskDir) else TaskDir(tasks)
        self.default_task = None if task is None else self.tasks[task].name
        self.max_steps = max_steps
        self.timeout = timeout
        self.max_output = max_output
        self.oracle_enabled = oracle
        self.sandbox_api_enabled = sandbox_api
        self.env_allow = frozenset(env_allow)
        self.limits = (
            limits if isinstance(limits, ContainerLimits) else ContainerLimits(**(limits or {}))
        )
        self.render_mode = render_mode
        self.observation_space = spaces.Dict(
            {
                "stdout": spaces.Text(max_output, min_length=0, charset=CHARSET),
                "stderr": spaces.Text(max_output, min_length=0, charset=CHARSET),
                "exit_code": spaces.Discrete(256),
            }
        )
        self.action_space = spaces.Text(MAX_COMMAND_LENGTH, min_length=0, charset=CHARSET)
        self._client: Any = None
        self._task: HarborTask | None = None
        self._container: TaskContainer | None = None
        self._close_container: weakref.finalize[Any, Any] | None = None
        self._steps = 0
        self._deadline: float | None = None
        self._done = False
        self._last = ""

    # -- episode ---------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode: pick the task, start its container, observe its instruction.

        Raises:
            KeyError: ``options["task"]`` names no task of the directory.
            TypeError: ``options["task"]`` is not a string.
            ImageBuildError: the task's image cannot be built here.
            ServerStartError: its container did not start.

        """
        super().reset(seed=seed)
        choice = (options or {}).get("task", self.default_task)
        if choice is not None and not isinstance(choice, str):
            raise TypeError(
                f"options['task'] must be a task name (str), not {type(choice).__name__}"
            )
        names = sorted(self.tasks)
        task = (
            self.tasks[choice]
            if choice is not None
            else self.tasks[names[int(self.np_random.integers(len(names)))]]
        )
        self._close_container_now()
        environment = resolve_env(
            task.environment_env, allowed=self.env_allow, where=f"task {task.name!r} [environment]"
        )
        if self._client is None:
            self._client = _docker_client()
        image = image_for(task, client=self._client)
        container = TaskContainer(
            task, image, limits=self.limits, environment=environment, client=self._client
        )
        self._container = container
        self._close_container = weakref.finalize(self, container.close)
        if task.dockerfile is None and any(task.environment_dir.glob("*")):
            # Harbor copies a prebuilt-image task's environment/ into the working directory.
            workdir = task.workdir or container.exec("pwd", timeout=30).stdout.decode().strip()
            container.put_dir(task.environment_dir, workdir or "/")
        self._task = task
        self._steps = 0
        self._done = False
        self._last = ""
        self._deadline = (
            None if task.agent_timeout is None else time.monotonic() + task.agent_timeout
        )
        stdout, cut = _observe(
            task.instruction.encode(), len(task.instruction.encode()), self.max_output
        )
        info = {
            "task": task.name,
            "instruction": task.instruction,
            "instruction_truncated": cut,
            "start_seconds": container.start_seconds,
        }
        return {"stdout": stdout, "stderr": "", "exit_code": 0}, info

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Run the command ``action``; ``"submit"`` grades the episode (module docstring).

        Raises:
            RuntimeError: no episode (call ``reset``), or it has ended.
            ValueError: the action is not a valid command.
            PermissionError: ``"oracle"`` where the operator did not enable it.

        """
        word = action.strip() if isinstance(action, str) else action
        if word == SUBMIT_ACTION:
            result = self.submit()
        elif word == ORACLE_ACTION:
            result = self.oracle()
        else:
            result = self.run(action)
        observation = {key: result.pop(key) for key in ("stdout", "stderr", "exit_code")}
        reward = result.pop("reward")
        terminated = result.pop("terminated")
        truncated = result.pop("truncated")
        return observation, reward, terminated, truncated, result

    @tool
    def run(self, command: str) -> dict[str, Any]:
        """Run a shell command in the task's container (one step of the episode).

        Args:
            command: run by ``bash -c`` in the container's working directory; printable
                ASCII, tabs and newlines, at most 1024 characters. Each command is a fresh
                shell (``cd`` and variables do not carry over); files persist.

        Returns:
            ``stdout``, ``stderr`` (cut to ``max_output`` characters), ``exit_code`` (124 after
            a timeout), ``reward``, ``terminated``, ``truncated`` (out of commands or of the
            agent's time: the verifier then ran, its reward is ``reward``), ``timed_out``,
            ``output_truncated``, ``task`` and ``step``; after the verifier ran, also
            ``rewards`` and the verifier's details.

        Raises:
            RuntimeError: no episode, or it has ended.
            ValueError: the command is not a valid action.

        """
        container, task = self._live()
        _check_command(command)
        timeout = self._command_timeout()
        result = container.run(command, timeout=timeout, user=task.agent_user)
        self._steps += 1
        self._last = f"$ {command}\n"
        return self._command_reply(result)

    @tool
    def submit(self) -> dict[str, Any]:
        """Hand the task in: run its tests as Harbor does, end the episode with their reward.

        Returns:
            the verifier's output as ``stdout`` (``/logs/verifier/test-stdout.txt``, cut),
            ``exit_code`` (the test script's), ``reward``, ``terminated`` (True),
            ``rewards`` (every named component), and ``verifier_error`` if it failed.

        Raises:
            RuntimeError: no episode, or it has ended.

        """
        self._live()
        return self._grade(truncated=False)

    def oracle(self) -> dict[str, Any]:
        """Run the task's ``solution/solve.sh`` as Harbor's oracle agent runs it (one step).

        Returns:
            as :meth:`run`, the output being ``/logs/agent/oracle.txt``.

        Raises:
            PermissionError: the operator did not enable the oracle.
            RuntimeError: no episode, or it has ended.

        """
        if not self.oracle_enabled:
            raise PermissionError(
                "the oracle is not enabled on this server (operator: oracle=True)"
            )
        container, task = self._live()
        env = resolve_env(
            task.solution_env, allowed=self.env_allow, where=f"task {task.name!r} [solution]"
        )
        timeout = self._remaining() if self._deadline is not None else 600.0
        result = run_oracle(container, task, env=env, timeout=timeout)
        self._steps += 1
        self._last = "$ oracle\n"
        return self._command_reply(result)

    def state(self) -> dict[str, Any]:
        """Return the episode's state: task, commands run, whether it ended, the container."""
        return {
            "task": None if self._task is None else self._task.name,
            "steps": self._steps,
            "max_steps": self.max_steps,
            "done": self._done,
            "container": None if self._container is None else self._container.id,
        }

    def render(self) -> str | None:
        """Return (``"ansi"``) the last command."""
        return self._last if self.render_mode == "ansi" else None

    def close(self) -> None:
        """Remove the episode's container; idempotent."""
        self._close_container_now()
        self._task = None
        super().close()

    # -- Harbor's BaseEnvironment calls (sandbox_api) -----------------------------------------

    def exec(
        self,
        command: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_sec: float | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        """Run ``command`` as Harbor's ``BaseEnvironment.exec`` does (outside the step budget).

        Returns:
            ``stdout``, ``stderr`` (text, cut to the capture limit) and ``return_code``.

        Raises:
            PermissionError: the operator did not enable ``sandbox_api``.
            RuntimeError: no episode.
            TypeError: an argument has the wrong type.

        """
        container, _ = self._sandbox()
        if not isinstance(command, str) or not all(
            isinstance(item, str) for item in (*(env or {}).keys(), *(env or {}).values())
        ):
            raise TypeError("exec: command and env must be strings")
        timeout = min(float(timeout_sec), 24 * 3600.0) if timeout_sec else 24 * 3600.0
        result = container.exec(command, timeout=timeout, user=user, cwd=cwd, env=env)
        return {
            "stdout": result.stdout.decode(errors="replace"),
            "stderr": result.stderr.decode(errors="replace"),
            "return_code": result.exit_code,
        }

    def upload(self, target_dir: str, archive: bytes) -> None:
        """Unpack the tar ``archive`` (at most :data:`MAX_TRANSFER_BYTES`) into ``target_dir``.

        Raises:
            PermissionError: the operator did not enable ``sandbox_api``.
            ValueError: the archive is too large, or ``target_dir`` is not absolute.

        """
        container, _ = self._sandbox()
        if not isinstance(archive, bytes) or len(archive) > MAX_TRANSFER_BYTES:
            raise ValueError(f"upload: expected a tar of at most {MAX_TRANSFER_BYTES} bytes")
        if not isinstance(target_dir, str) or not target_dir.startswith("/"):
            raise ValueError(
                f"upload: expected an absolute path in the container, got {target_dir!r}"
            )
        container.put_archive(target_dir, archive)

    def download(self, path: str) -> bytes | None:
        """Return a tar of ``path`` in the container (``None`` if absent).

        Raises:
            PermissionError: the operator did not enable ``sandbox_api``.
            ValueError: the tar would exceed :data:`MAX_TRANSFER_BYTES`.

        """
        container, _ = self._sandbox()
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"download: expected an absolute path in the container, got {path!r}")
        return container.get_archive(path, limit=MAX_TRANSFER_BYTES)

    # -- internals -------------------------------------------------------------------------

    def _sandbox(self) -> tuple[TaskContainer, HarborTask]:
        if not self.sandbox_api_enabled:
            raise PermissionError(
                "the sandbox API (exec/upload/download) is not enabled on this server "
                "(operator: sandbox_api=True)"
            )
        if self._container is None or self._task is None:
            raise RuntimeError("no episode: call reset() first")
        return self._container, self._task

    def _live(self) -> tuple[TaskContainer, HarborTask]:
        if self._container is None or self._task is None:
            raise RuntimeError("no episode: call reset() before step()")
        if self._done:
            raise RuntimeError(f"the episode of task {self._task.name!r} has ended: call reset()")
        return self._container, self._task

    def _remaining(self) -> float:
        return float("inf") if self._deadline is None else self._deadline - time.monotonic()

    def _command_timeout(self) -> float:
        return max(0.001, min(self.timeout, self._remaining()))

    def _command_reply(self, result: Any) -> dict[str, Any]:
        stdout, out_cut = _observe(result.stdout, result.stdout_size, self.max_output)
        stderr, err_cut = _observe(result.stderr, result.stderr_size, self.max_output)
        self._last += stdout + stderr
        assert self._task is not None
        reply: dict[str, Any] = {
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": result.exit_code,
            "reward": 0.0,
            "terminated": False,
            "truncated": False,
            "timed_out": result.timed_out,
            "output_truncated": out_cut or err_cut,
            "task": self._task.name,
            "step": self._steps,
        }
        out_of_steps = self._steps >= self.max_steps
        out_of_time = self._remaining() <= 0
        if out_of_steps or out_of_time:
            graded = self._grade(truncated=True)
            reply.update(
                {
                    key: value
                    for key, value in graded.items()
                    if key not in ("stdout", "stderr", "exit_code")
                },
                agent_timed_out=out_of_time,
            )
        return reply

    def _grade(self, *, truncated: bool) -> dict[str, Any]:
        container, task = self._container, self._task
        assert container is not None and task is not None
        env = resolve_env(
            task.verifier_env, allowed=self.env_allow, where=f"task {task.name!r} [verifier]"
        )
        outcome = run_verifier(container, task, env=env)
        self._done = True
        stdout, _ = _observe(outcome.stdout, len(outcome.stdout), self.max_output)
        self._last = f"$ {SUBMIT_ACTION}\n{stdout}"
        reply: dict[str, Any] = {
            "stdout": stdout,
            "stderr": "",
            "exit_code": outcome.exit_code & 0xFF,
            "reward": outcome.reward,
            "terminated": not truncated,
            "truncated": truncated,
            "rewards": dict(outcome.rewards),
            "verifier_seconds": outcome.seconds,
            "verifier_timed_out": outcome.timed_out,
            "task": task.name,
            "step": self._steps,
        }
        if outcome.error is not None:
            reply["verifier_error"] = outcome.error
        return reply

    def _close_container_now(self) -> None:
        if self._close_container is not None:
            self._close_container()  # runs once: the finalizer is then dead
        self._close_container = None
        self._container = None
