"""Harbor task folders, read with ``tomllib`` and nothing of Harbor's: the fields we honour.

A Harbor task is a folder::

    task.toml          [verifier] timeout_sec, env, user; [agent] timeout_sec, user;
                       [environment] build_timeout_sec, docker_image, cpus, memory_mb (or the
                       older memory = "2G"), storage_mb, network_mode (or allow_internet),
                       workdir, env; [solution] env
    instruction.md     what the agent is asked to do
    environment/       Dockerfile (and its build context), or task.toml names docker_image
    tests/test.sh      the verifier: writes /logs/verifier/reward.txt (a number) or reward.json
    solution/solve.sh  the oracle

Defaults are Harbor 0.25's (``harbor.models.task.config``): verifier 600 s, agent unlimited,
build 600 s. The reward files are parsed exactly as Harbor's ``Verifier`` parses them
(:func:`parse_rewards`). A task directory (:class:`TaskDir`) is chosen by the operator; a
client names a task by its folder name only, never by a path.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "HarborTask",
    "RewardFileError",
    "TaskDir",
    "TaskFormatError",
    "load_task",
    "parse_rewards",
    "resolve_env",
]

TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A task's name is its folder's name: no separators, no leading dot, at most 128 characters."""
MAX_TASKS = 10_000
"""Task folders read from one directory, at most (more is an operator's mistake)."""
MAX_INSTRUCTION_BYTES = 1 << 20
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


try:
    import tomllib  # type: ignore[import-not-found,unused-ignore]  # Python 3.11+
except ImportError:  # pragma: no cover - Python 3.10: the harbor extra installs tomli
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]


class TaskFormatError(ValueError):
    """A task folder does not have Harbor's shape, or its ``task.toml`` is invalid."""


class RewardFileError(ValueError):
    """The verifier wrote no reward file, an empty one, or one Harbor would not parse."""


def _number(data: Mapping[str, Any], key: str, default: float | None, where: str) -> float | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TaskFormatError(f"{where}: {key} must be a finite number, got {value!r}")
    if value <= 0:
        raise TaskFormatError(f"{where}: {key} must be positive, got {value!r}")
    return float(value)


def _size_mb(text: str, where: str) -> int:
    """Harbor's legacy ``memory = "2G"`` / ``"512M"`` sizes, in MB."""
    size = text.strip().upper()
    units = {"G": 1024.0, "M": 1.0, "K": 1 / 1024}
    if not size or size[-1] not in units:
        raise TaskFormatError(f"{where}: size {text!r}: expected a form like '1G' or '512M'")
    try:
        return int(float(size[:-1]) * units[size[-1]])
    except ValueError as exc:
        raise TaskFormatError(f"{where}: size {text!r}: {exc}") from exc


def _megabytes(value: Any, key: str, where: str) -> int | None:
    number = _number({key: value}, key, None, where)
    return None if number is None else int(number)


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise TaskFormatError(f"{where}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _strings(data: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = data.get(key, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TaskFormatError(f"{where}: {key} must be a table of strings")
    return dict(value)


def _user(data: Mapping[str, Any], where: str) -> str | None:
    user = data.get("user")
    if user is None:
        return None
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise TaskFormatError(f"{where}: user must be a name or uid, got {user!r}")
    return str(user)


@dataclasses.dataclass(frozen=True)
class HarborTask:
    """One Harbor task folder, as read from disk.

    Attributes:
        name: the folder's name (what a client asks for).
        path: the folder (resolved).
        instruction: ``instruction.md``'s text.
        verifier_timeout: ``[verifier] timeout_sec`` (default 600).
        agent_timeout: ``[agent] timeout_sec``: the agent's whole budget (``None``: none).
        build_timeout: ``[environment] build_timeout_sec`` (default 600).
        docker_image: ``[environment] docker_image``: a prebuilt image (``None``: build
            ``environment/Dockerfile``).
        cpus: ``[environment] cpus`` (``None``: the operator's default).
        memory_mb: ``[environment] memory_mb`` (or ``memory``).
        storage_mb: ``[environment] storage_mb``.
        network: ``"no-network"``, ``"public"`` or ``"allowlist"`` (Harbor's default: public).
        workdir: ``[environment] workdir``: where commands run (``None``: the image's WORKDIR).
        environment_env, verifier_env, solution_env: the ``env`` tables (templates unresolved).
        agent_user, verifier_user: who commands and the verifier run as (``None``: the image's).

    """

    name: str
    path: Path
    instruction: str
    verifier_timeout: float = 600.0
    agent_timeout: float | None = None
    build_timeout: float = 600.0
    docker_image: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    storage_mb: int | None = None
    network: str = "public"
    workdir: str | None = None
    environment_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    verifier_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    solution_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    agent_user: str | None = None
    verifier_user: str | None = None

    @property
    def environment_dir(self) -> Path:
        """``environment/``: the Dockerfile's build context."""
        return self.path / "environment"

    @property
    def dockerfile(self) -> Path | None:
        """``environment/Dockerfile`` if the task has one."""
        path = self.environment_dir / "Dockerfile"
        return path if path.is_file() else None

    @property
    def tests_dir(self) -> Path:
        """``tests/``, uploaded to ``/tests`` before the verifier runs."""
        return self.path / "tests"

    @property
    def solution_dir(self) -> Path:
        """``solution/``, uploaded to ``/solution`` for the oracle."""
        return self.path / "solution"


def load_task(path: str | os.PathLike[str]) -> HarborTask:
    """Read the task folder at ``path``.

    Raises:
        TaskFormatError: a required file is missing, ``task.toml`` does not parse, or a field
            has the wrong type; the text names the file and the field.

    """
    root = Path(path).resolve()
    where = str(root / "task.toml")
    for required in ("task.toml", "instruction.md", "tests/test.sh"):
        if not (root / required).is_file():
            raise TaskFormatError(f"{root}: not a Harbor task folder: {required} is missing")
    try:
        data = tomllib.loads((root / "task.toml").read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TaskFormatError(f"{where}: {exc}") from exc
    instruction_bytes = (root / "instruction.md").read_bytes()[:MAX_INSTRUCTION_BYTES]
    verifier = _table(data, "verifier", where)
    agent = _table(data, "agent", where)
    environment = _table(data, "environment", where)
    solution = _table(data, "solution", where)
    docker_image = environment.get("docker_image")
    if docker_image is not None and not isinstance(docker_image, str):
        raise TaskFormatError(f"{where}: docker_image must be a string")
    if docker_image is None and not (root / "environment" / "Dockerfile").is_file():
        raise TaskFormatError(f"{root}: environment/Dockerfile is missing (and no docker_image)")
    memory_mb = environment.get("memory_mb")
    if memory_mb is None and isinstance(environment.get("memory"), str):
        memory_mb = _size_mb(environment["memory"], where)
    storage_mb = environment.get("storage_mb")
    if storage_mb is None and isinstance(environment.get("storage"), str):
        storage_mb = _size_mb(environment["storage"], where)
    network = environment.get("network_mode")
    if network is None and "allow_internet" in environment:
        network = "public" if environment["allow_internet"] else "no-network"
    if network not in (None, "no-network", "public", "allowlist"):
        raise TaskFormatError(f"{where}: network_mode must be no-network, public or allowlist")
    workdir = environment.get("workdir")
    if workdir is not None and not (isinstance(workdir, str) and workdir.startswith("/")):
        raise TaskFormatError(f"{where}: workdir must be an absolute path, got {workdir!r}")
    return HarborTask(
        name=root.name,
        path=root,
        instruction=instruction_bytes.decode("utf-8", errors="replace"),
        verifier_timeout=_number(verifier, "timeout_sec", 600.0, where) or 600.0,
        agent_timeout=_number(agent, "timeout_sec", None, where),
        build_timeout=_number(environment, "build_timeout_sec", 600.0, where) or 600.0,
        docker_image=docker_image,
        cpus=_number(environment, "cpus", None, where),
        memory_mb=_megabytes(memory_mb, "memory_mb", where),
        storage_mb=_megabytes(storage_mb, "storage_mb", where),
        network=network or "public",
        workdir=workdir,
        environment_env=_strings(environment, "env", where),
        verifier_env=_strings(verifier, "env", where),
        solution_env=_strings(solution, "env", where),
        agent_user=_user(agent, where),
        verifier_user=_user(verifier, where),
    )


class TaskDir(Mapping[str, HarborTask]):
    """The Harbor task folders directly under ``root`` (the operator's choice), by name.

    Folders that are not tasks (no ``task.toml``) are skipped; a folder with a ``task.toml``
    that does not load is an error, so an operator sees a broken task at start-up. Symbolic
    links are not followed out of ``root``.

    Raises:
        TaskFormatError: ``root`` is not a directory, holds no task, or a task is invalid.

    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise TaskFormatError(f"{self.root}: not a directory of Harbor tasks")
        tasks: dict[str, HarborTask] = {}
        for entry in sorted(self.root.iterdir())[:MAX_TASKS]:
            if not TASK_NAME.match(entry.name) or not (entry / "task.toml").is_file():
                continue
            if entry.resolve().parent != self.root:
                continue  # a link out of the operator's directory
            tasks[entry.name] = load_task(entry)
        if not tasks:
            raise TaskFormatError(f"{self.root}: no Harbor task folder (with a task.toml) in it")
        self._tasks = tasks

    def __getitem__(self, name: str) -> HarborTask:
        """Return the task ``name`` (a folder name of this directory).

        Raises:
            KeyError: no such task; the text lists the names there are.

        """
        if not isinstance(name, str) or name not in self._tasks:
            known = ", ".join(sorted(self._tasks)[:20])
            raise KeyError(f"no Harbor task {name!r} in the hosted directory; tasks: {known}")
        return self._tasks[name]

    def __iter__(self) -> Iterator[str]:
        """Iterate over the task names, sorted."""
        return iter(self._tasks)

    def __len__(self) -> int:
        """Return the number of tasks."""
        return len(self._tasks)


def resolve_env(env: Mapping[str, str], *, allowed: Collection[str], where: str) -> dict[str, str]:
    """Resolve Harbor's ``${VAR}`` / ``${VAR:-default}`` templates in ``env``'s values.

    Harbor reads them from the host's environment. Here only the variables the operator lists
    in ``allowed`` are read from the server's environment (a task folder must not be able to
    copy the server's secrets into a sandbox); others take their default.

    Raises:
        TaskFormatError: a template names a variable that is neither allowed and set nor has a
            default; the text names it and ``where``.

    """

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in allowed and name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise TaskFormatError(
            f"{where}: ${{{name}}} has no default and is not among the variables the operator "
            f"passes to tasks (env_allow={sorted(allowed)})"
        )

    return {key: _TEMPLATE.sub(value, text) for key, text in env.items()}


def parse_rewards(reward_json: bytes | None, reward_txt: bytes | None) -> dict[str, float]:
    """Return the rewards the verifier wrote, parsed exactly as Harbor's ``Verifier`` does.

    ``reward.json`` wins over ``reward.txt``. A text file holds one number (key ``reward``);
    a JSON file an object of name -> number. Non-finite and non-numeric values,
    empty files and a missing pair of files are errors, as in Harbor.

    Raises:
        RewardFileError: there is no reward, or it is not what Harbor accepts.

    """
    if reward_json is not None:
        if not reward_json:
            raise RewardFileError("reward file is empty at /logs/verifier/reward.json")
        try:
            rewards = json.loads(reward_json)
        except (ValueError, TypeError) as exc:
            raise RewardFileError(
                "failed to parse rewards from /logs/verifier/reward.json"
            ) from exc
        values = rewards.values() if isinstance(rewards, dict) else [rewards]
        for item in values:  # bool is an int to Harbor too
            if not isinstance(item, (int, float)):
                raise RewardFileError(f"non-numeric reward {item!r} in reward.json")
            if not math.isfinite(item):
                raise RewardFileError(f"non-finite reward {item!r} in reward.json")
        if not isinstance(rewards, dict):  # Harbor's VerifierResult wants name -> number
            raise RewardFileError(f"reward.json must hold an object of name -> number: {rewards!r}")
        return {str(key): float(item) for key, item in rewards.items()}
    if reward_txt is not None:
        if not reward_txt:
            raise RewardFileError("reward file is empty at /logs/verifier/reward.txt")
        try:
            number = float(reward_txt.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RewardFileError("failed to parse rewards from /logs/verifier/reward.txt") from exc
        if not math.isfinite(number):
            raise RewardFileError(f"non-finite reward {number!r} in reward.txt")
        return {"reward": number}
    raise RewardFileError(
        "no reward file found at /logs/verifier/reward.txt or /logs/verifier/reward.json"
    )
