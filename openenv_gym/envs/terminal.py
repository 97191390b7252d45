"""TerminalEnv: an agent solves a task in a shell, one command per step.

Each episode gets a task from a :class:`~openenv_gym.envs.tasks.TaskSet` and a fresh, empty
working directory (the task's files and setup script prepare it). An action is a shell command,
run there by ``/bin/sh -c`` with a minimal environment and a timeout; the observation is its
stdout, stderr and exit code. The reward is 1.0, and the episode terminates, as soon as the
task's verifier passes; it is truncated after ``max_steps`` commands.

The commands are arbitrary code, so every episode runs in its own
:class:`~openenv_gym.envs.sandbox.Sandbox` (namespaces via bubblewrap, and/or a per-episode
uid, rlimits, a scrubbed environment; everything it started is killed when a command ends and
when the episode ends), and the env refuses to start when no isolation is available unless the
operator passes ``isolation="none"``. It also refuses to start outside a container unless told
otherwise. Host it in one: ``RemoteEnv("openenv_gym.envs.terminal:TerminalEnv",
docker_image="openenv-gym:latest")`` runs it in the server image, each episode as its own uid.

The agent's tool is the method :meth:`TerminalEnv.run` (marked with
:func:`openenv_gym.envs.tool`); ``step`` calls it, so a Gymnasium rollout and a tool call
behave identically.
"""

from __future__ import annotations

import getpass
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium
from gymnasium import spaces

from openenv_gym.envs import tool
from openenv_gym.envs.sandbox import (
    TIMEOUT_EXIT_CODE,
    CommandResult,
    Isolation,
    Sandbox,
    SandboxLimits,
    SandboxUnavailableError,
    resolve,
)
from openenv_gym.envs.tasks import Task, TaskSet, VerifierContext, verify

__all__ = [
    "ALLOW_ENV_VAR",
    "CHARSET",
    "TIMEOUT_EXIT_CODE",
    "CommandResult",
    "Isolation",
    "SandboxLimits",
    "SandboxUnavailableError",
    "TerminalEnv",
    "in_container",
]

CHARSET = "".join(chr(code) for code in range(0x20, 0x7F)) + "\t\n"
"""Characters of commands and of observed output: printable ASCII, tab and newline."""
_CHARSET = frozenset(CHARSET)
MAX_COMMAND_LENGTH = 1024
ALLOW_ENV_VAR = "OPENENV_GYM_ALLOW_TERMINAL"
"""Set to ``1`` to let TerminalEnv run commands outside a container."""
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")
CGROUP_FILE = "/proc/1/cgroup"
_CGROUP_WORDS = ("container", "docker", "kubepods", "lxc", "podman")
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def in_container(
    markers: Sequence[str] = CONTAINER_MARKERS, cgroup_file: str = CGROUP_FILE
) -> bool:
    """Return whether this process seems to run in a container.

    True when a marker file exists (``/.dockerenv``: Docker; ``/run/.containerenv``: Podman)
    or the init process's cgroups name a container runtime.
    """
    if any(os.path.exists(marker) for marker in markers):
        return True
    try:
        cgroups = Path(cgroup_file).read_text(errors="replace")
    except OSError:
        return False
    return any(word in cgroups for word in _CGROUP_WORDS)


def _escape(char: str) -> str:
    return char if char in _CHARSET else char.encode("unicode_escape").decode("ascii")


def _observe(data: bytes, size: int, limit: int) -> tuple[str, bool]:
    r"""Return ``data`` as observed text of at most ``limit`` characters, and whether it was cut.

    Bytes that are not UTF-8 and characters outside :data:`CHARSET` appear as Python escapes
    (``\xff``, ``\x1b``, ``\u00e9``): each is at least as long as its bytes, so decoding the
    first ``limit`` bytes is enough.
    """
    text = "".join(map(_escape, data[:limit].decode("utf-8", errors="backslashreplace")))
    if len(text) <= limit and size <= limit:
        return text, False
    marker = f"\n[output truncated: {size} bytes in all]"
    if len(marker) >= limit:
        return text[:limit], True
    return text[: limit - len(marker)] + marker, True


class TerminalEnv(gymnasium.Env[dict[str, Any], str]):
    """Solve shell tasks: actions are commands, observations their stdout, stderr, exit code.

    Args:
        tasks: the task set (a :class:`TaskSet`, task records, or the path of a ``.jsonl`` or
            ``.parquet`` file); default :meth:`TaskSet.builtin`.
        max_steps: commands per episode; the episode is truncated after the last.
        timeout: seconds each command (and a task's setup, and a verifier command) may run.
        max_output: characters of stdout and of stderr observed; longer output is cut and
            ends with a note of its full size.
        allow_outside_container: run commands even when this process is not in a container
            (they run sandboxed, on this machine). Also allowed by
            ``OPENENV_GYM_ALLOW_TERMINAL=1``.
        isolation: how episodes are isolated (an operator's choice; see
            :mod:`openenv_gym.envs.sandbox`): ``"auto"`` the strongest available,
            ``"namespaces"`` (bubblewrap), ``"uid"`` (a per-episode uid), or ``"none"`` (the
            server's user, a process group: only for trusted commands).
        limits: the rlimits of every command's processes (default :class:`SandboxLimits`).
        render_mode: ``"ansi"`` renders the last command and its output.

    ``reset(options={"task": ...})`` picks the task: an id from the set, a :class:`Task` or a
    task record; without it, a task is drawn with the env's seeded ``np_random``. The reset
    info holds ``task_id`` and ``prompt``.

    Raises:
        PermissionError: not in a container, and running outside one was not allowed.
        SandboxUnavailableError: the isolation asked for (any, for ``"auto"``) is not
            available here; the text names what is missing (a ``PermissionError`` too).

    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        tasks: TaskSet | Iterable[Task | Mapping[str, Any]] | str | os.PathLike[str] | None = None,
        *,
        max_steps: int = 16,
        timeout: float = 10.0,
        max_output: int = 4096,
        allow_outside_container: bool = False,
        isolation: Isolation = "auto",
        limits: SandboxLimits | None = None,
        render_mode: str | None = None,
    ) -> None:
        allowed = allow_outside_container or os.environ.get(ALLOW_ENV_VAR) == "1"
        if not allowed and not in_container():
            raise PermissionError(
                "TerminalEnv runs arbitrary shell commands and refuses to start outside a "
                "container. Host it in one (RemoteEnv('openenv_gym.envs.terminal:TerminalEnv', "
                "docker_image='openenv-gym:latest')), or, to run the commands on this machine as "
                f"{getpass.getuser()!r}, pass allow_outside_container=True or set "
                f"{ALLOW_ENV_VAR}=1."
            )
        if max_steps < 1 or max_output < 1 or timeout <= 0:
            raise ValueError("max_steps and max_output must be >= 1, timeout > 0")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.isolation = resolve(isolation)
        """The isolation mode in force: ``"namespaces"``, ``"uid"`` or ``"none"``."""
        self.limits = limits or SandboxLimits()
        self.tasks = _task_set(tasks)
        self.max_steps = max_steps
        self.timeout = timeout
        self.max_output = max_output
        self.render_mode = render_mode
        self.observation_space = spaces.Dict(
            {
                "stdout": spaces.Text(max_output, min_length=0, charset=CHARSET),
                "stderr": spaces.Text(max_output, min_length=0, charset=CHARSET),
                "exit_code": spaces.Discrete(256),
            }
        )
        self.action_space = spaces.Text(MAX_COMMAND_LENGTH, min_length=0, charset=CHARSET)
        self._task: Task | None = None
        self._sandbox: Sandbox | None = None
        self._close_sandbox: weakref.finalize[Any, Any] | None = None
        self._steps = 0
        self._last: CommandResult | None = None
        self._last_command = ""
        self._success = False

    # -- episode ---------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode: pick the task, make a fresh working directory and prepare it.

        Raises:
            KeyError: ``options["task"]`` names no task of the set.
            RuntimeError: the task's setup script failed.

        """
        super().reset(seed=seed)
        choice = (options or {}).get("task")
        task = self._resolve(choice) if choice is not None else self.tasks.sample(self.np_random)
        self._close_sandbox_now()
        sandbox = Sandbox(self.isolation, limits=self.limits)
        self._sandbox = sandbox
        self._close_sandbox = weakref.finalize(self, sandbox.close)
        self._task = task
        self._steps = 0
        self._last = None
        self._last_command = ""
        self._success = False
        sandbox.write_files(task.files)
        if task.setup:
            result = self._execute(task.setup)
            if result.exit_code != 0:
                stderr = result.stderr.decode(errors="replace").strip()
                raise RuntimeError(
                    f"the setup of task {task.id!r} failed (exit {result.exit_code}): {stderr}"
                )
        observation = {"stdout": "", "stderr": "", "exit_code": 0}
        return observation, {"task_id": task.id, "prompt": task.prompt}

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Run the command ``action``: exactly :meth:`run`, its result split Gymnasium's way."""
        result = self.run(action)
        observation = {key: result.pop(key) for key in ("stdout", "stderr", "exit_code")}
        reward = result.pop("reward")
        terminated = result.pop("terminated")
        truncated = result.pop("truncated")
        return observation, reward, terminated, truncated, result

    @tool
    def run(self, command: str) -> dict[str, Any]:
        """Run a shell command in the task's working directory (one step of the episode).

        Args:
            command: run by ``/bin/sh -c``; printable ASCII, tabs and newlines, at most 1024
                characters. Each command starts in the working directory with a fresh shell
                (``cd`` and variables do not carry over); processes it leaves running are
                killed when it ends, wherever they moved (new sessions included).

        Returns:
            ``stdout`` and ``stderr`` (text, cut to ``max_output`` characters), ``exit_code``
            (124 after a timeout), ``reward`` (1.0 when the task is solved), ``terminated``
            (solved), ``truncated`` (out of steps), ``timed_out``, ``output_truncated``,
            ``task_id`` and ``step`` (commands run this episode).

        Raises:
            RuntimeError: no episode: call ``reset`` first.
            ValueError: the command is not a valid action.

        """
        if self._task is None or self._sandbox is None:
            raise RuntimeError("no episode: call reset() before step() or run()")
        _check_command(command)
        result = self._execute(command)
        self._steps += 1
        self._last = result
        self._last_command = command
        context = VerifierContext(
            workdir=self._sandbox.workdir,
            stdout=result.stdout.decode("utf-8", errors="replace"),
            exit_code=result.exit_code,
            run=lambda check: self._execute(check).exit_code,
        )
        self._success = verify(self._task.verifier, context)
        stdout, stdout_cut = _observe(result.stdout, result.stdout_size, self.max_output)
        stderr, stderr_cut = _observe(result.stderr, result.stderr_size, self.max_output)
        return {
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": result.exit_code,
            "reward": 1.0 if self._success else 0.0,
            "terminated": self._success,
            "truncated": not self._success and self._steps >= self.max_steps,
            "timed_out": result.timed_out,
            "output_truncated": stdout_cut or stderr_cut,
            "task_id": self._task.id,
            "step": self._steps,
        }

    def state(self) -> dict[str, Any]:
        """Return the episode's state: task id, steps taken, working directory, solved."""
        return {
            "task_id": None if self._task is None else self._task.id,
            "steps": self._steps,
            "max_steps": self.max_steps,
            "workdir": None if self._sandbox is None else str(self._sandbox.workdir),
            "solved": self._success,
        }

    def render(self) -> str | None:
        """Return (``"ansi"``) the last command, its output and exit code."""
        if self.render_mode != "ansi":
            return None
        if self._last is None:
            return "" if self._task is None else f"# {self._task.prompt}\n"
        out, _ = _observe(self._last.stdout, self._last.stdout_size, self.max_output)
        err, _ = _observe(self._last.stderr, self._last.stderr_size, self.max_output)
        return f"$ {self._last_command}\n{out}{err}[exit {self._last.exit_code}]\n"

    def close(self) -> None:
        """Kill the episode's processes, remove its working directory; idempotent."""
        self._close_sandbox_now()
        self._task = None
        super().close()

    # -- internals -------------------------------------------------------------------------

    def _resolve(self, choice: object) -> Task:
        if isinstance(choice, Task):
            return choice
        if isinstance(choice, str):
            return self.tasks.by_id(choice)
        if isinstance(choice, Mapping):
            return Task.from_dict(choice)
        raise TypeError(f"options['task'] must be a task id, a Task or a task record: {choice!r}")

    def _execute(self, command: str) -> CommandResult:
        assert self._sandbox is not None
        workdir = str(self._sandbox.workdir)
        env = {
            "PATH": _SAFE_PATH,
            "HOME": workdir,
            "PWD": workdir,
            "TMPDIR": workdir if self.isolation == "uid" else "/tmp",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TERM": "dumb",
        }
        return self._sandbox.run(command, env=env, timeout=self.timeout)

    def _close_sandbox_now(self) -> None:
        if self._close_sandbox is not None:
            self._close_sandbox()  # runs once: the finalizer is then dead
        self._close_sandbox = None
        self._sandbox = None


def _check_command(command: object) -> None:
    if not isinstance(command, str):
        raise ValueError(f"a command must be a string, not {type(command).__name__}")
    if len(command) > MAX_COMMAND_LENGTH:
        raise ValueError(
            f"a command has at most {MAX_COMMAND_LENGTH} characters, not {len(command)}"
        )
    bad = sorted({char for char in command if char not in _CHARSET})
    if bad:
        raise ValueError(
            f"a command may hold printable ASCII, tabs and newlines only, not {''.join(bad)!r}"
        )


def _task_set(
    tasks: TaskSet | Iterable[Task | Mapping[str, Any]] | str | os.PathLike[str] | None,
) -> TaskSet:
    if tasks is None:
        return TaskSet.builtin()
    if isinstance(tasks, TaskSet):
        return tasks
    if isinstance(tasks, (str, os.PathLike)):
        path = Path(tasks)
        if path.suffix == ".parquet":
            return TaskSet.from_parquet(path)
        return TaskSet.from_jsonl(path)
    return TaskSet(tasks)
