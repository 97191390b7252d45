"""TerminalEnv: an agent solves a task in a shell, one command per step.

Each episode gets a task from a :class:`~openenv_gym.envs.tasks.TaskSet` and a fresh, empty
working directory (the task's files and setup script prepare it). An action is a shell command,
run there by ``/bin/sh -c`` with a minimal environment and a timeout; the observation is its
stdout, stderr and exit code. The reward is 1.0, and the episode terminates, as soon as the
task's verifier passes; it is truncated after ``max_steps`` commands.

The commands are arbitrary code, so the env refuses to start outside a container unless told
otherwise. Host it in one: ``RemoteEnv("openenv_gym.envs.terminal:TerminalEnv",
docker_image="openenv-gym:latest")`` runs it in the server image, as a non-root user.

The agent's tool is the method :meth:`TerminalEnv.run` (marked with
:func:`openenv_gym.envs.tool`); ``step`` calls it, so a Gymnasium rollout and a tool call
behave identically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import gymnasium
from gymnasium import spaces

from openenv_gym.envs import tool
from openenv_gym.envs.tasks import Task, TaskSet, VerifierContext, verify

__all__ = [
    "ALLOW_ENV_VAR",
    "CHARSET",
    "CommandResult",
    "TerminalEnv",
    "in_container",
    "run_shell",
]

CHARSET = "".join(chr(code) for code in range(0x20, 0x7F)) + "\t\n"
"""Characters of commands and of observed output: printable ASCII, tab and newline."""
_CHARSET = frozenset(CHARSET)
MAX_COMMAND_LENGTH = 1024
TIMEOUT_EXIT_CODE = 124
"""The exit code reported for a command that ran out of time (as ``timeout(1)`` reports)."""
ALLOW_ENV_VAR = "OPENENV_GYM_ALLOW_TERMINAL"
"""Set to ``1`` to let TerminalEnv run commands outside a container."""
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")
CGROUP_FILE = "/proc/1/cgroup"
_CGROUP_WORDS = ("container", "docker", "kubepods", "lxc", "podman")
CAPTURE_LIMIT = 1 << 20
"""Bytes of each output stream kept for verifiers; the rest is read and dropped."""
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


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a shell command did: its output (at most ``CAPTURE_LIMIT`` bytes each) and exit."""

    stdout: bytes
    stderr: bytes
    exit_code: int
    timed_out: bool
    stdout_size: int
    """Bytes written to stdout in all (``len(stdout)`` unless cut)."""
    stderr_size: int


class _Reader(threading.Thread):
    """Read a pipe to its end, keeping the first ``limit`` bytes (bounded memory)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.limit = limit
        self.data = bytearray()
        self.size = 0

    def run(self) -> None:
        fd = self.stream.fileno()
        while chunk := os.read(fd, 65536):
            self.size += len(chunk)
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in the group
        os.killpg(pgid, signal.SIGKILL)


def run_shell(
    command: str,
    cwd: Path,
    *,
    env: Mapping[str, str],
    timeout: float,
    capture_limit: int = CAPTURE_LIMIT,
) -> CommandResult:
    """Run ``/bin/sh -c command`` in ``cwd`` with no stdin; kill it after ``timeout`` seconds.

    The command runs in a new process group, killed when the command ends (or times out): a
    background process it leaves cannot outlive it, nor hold its output open. A timed-out
    command reports exit code 124; one killed by signal N reports 128 + N, as shells do.
    """
    process = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    readers = [_Reader(process.stdout, capture_limit), _Reader(process.stderr, capture_limit)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process.pid)
        code = process.wait()
    _kill_group(process.pid)  # whatever the command left running
    for reader in readers:
        # A process that left the group (setsid) may hold a pipe open: do not wait for it.
        reader.join(timeout=2.0)
        if not reader.is_alive():
            reader.stream.close()
    if timed_out:
        code = TIMEOUT_EXIT_CODE
    elif code < 0:
        code = 128 - code
    out, err = readers
    return CommandResult(
        stdout=bytes(out.data),
        stderr=bytes(err.data),
        exit_code=code & 0xFF,
        timed_out=timed_out,
        stdout_size=out.size,
        stderr_size=err.size,
    )


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
            (they run as this user, on this machine). Also allowed by
            ``OPENENV_GYM_ALLOW_TERMINAL=1``.
        render_mode: ``"ansi"`` renders the last command and its output.

    ``reset(options={"task": ...})`` picks the task: an id from the set, a :class:`Task` or a
    task record; without it, a task is drawn with the env's seeded ``np_random``. The reset
    info holds ``task_id`` and ``prompt``.

    Raises:
        PermissionError: not in a container, and running outside one was not allowed.

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
        self._workdir: Path | None = None
        self._remove_workdir: weakref.finalize[Any, Any] | None = None
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
        self._remove_workdir_now()
        workdir = Path(tempfile.mkdtemp(prefix="openenv-terminal-")).resolve()
        self._workdir = workdir
        self._remove_workdir = weakref.finalize(self, shutil.rmtree, str(workdir), True)
        self._task = task
        self._steps = 0
        self._last = None
        self._last_command = ""
        self._success = False
        for relative, text in task.files.items():
            path = workdir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
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
                killed when it ends.

        Returns:
            ``stdout`` and ``stderr`` (text, cut to ``max_output`` characters), ``exit_code``
            (124 after a timeout), ``reward`` (1.0 when the task is solved), ``terminated``
            (solved), ``truncated`` (out of steps), ``timed_out``, ``output_truncated``,
            ``task_id`` and ``step`` (commands run this episode).

        Raises:
            RuntimeError: no episode: call ``reset`` first.
            ValueError: the command is not a valid action.

        """
        if self._task is None or self._workdir is None:
            raise RuntimeError("no episode: call reset() before step() or run()")
        _check_command(command)
        result = self._execute(command)
        self._steps += 1
        self._last = result
        self._last_command = command
        context = VerifierContext(
            workdir=self._workdir,
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
            "workdir": None if self._workdir is None else str(self._workdir),
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
        """Remove the working directory; idempotent."""
        self._remove_workdir_now()
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
        assert self._workdir is not None
        env = {
            "PATH": _SAFE_PATH,
            "HOME": str(self._workdir),
            "PWD": str(self._workdir),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TERM": "dumb",
        }
        return run_shell(command, self._workdir, env=env, timeout=self.timeout)

    def _remove_workdir_now(self) -> None:
        if self._remove_workdir is not None:
            self._remove_workdir()  # runs once: the finalizer is then dead
        self._remove_workdir = None
        self._workdir = None


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
