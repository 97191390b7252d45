"""Task sets: what an episode asks an agent to do, and how its success is checked.

A :class:`Task` is plain data (an id, a prompt, a *verifier*, and optionally files and a shell
``setup`` that prepare the working directory), so task sets load from JSON Lines, Parquet or a
Hugging Face dataset alike, and travel as constructor arguments to a remote env.

A verifier is a dict ``{"type": <name>, ...}``. Its types (paths are relative to the episode's
working directory; the env checks its task's verifier after every step):

- ``file_exists`` (``path``): the file exists.
- ``file_contains`` (``path``, ``text``): the file's text contains ``text``.
- ``file_equals`` (``path``, ``text``): the file's text is ``text``, surrounding whitespace
  ignored on both sides.
- ``stdout_contains`` (``text``): the last command's stdout contains ``text``.
- ``exit_code`` (``code``): the last command exited with ``code``.
- ``command`` (``run``): the shell command ``run`` exits with 0 (run in the working directory,
  not an agent step; its output is not shown).
- ``all`` (``of``, a list of verifiers): every one of them passes.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, overload

import numpy as np

__all__ = ["VERIFIER_TYPES", "Task", "TaskSet", "VerifierContext", "verify"]

BUILTIN_RESOURCE = "terminal_tasks.jsonl"

VERIFIER_TYPES: Mapping[str, tuple[str, ...]] = {
    "file_exists": ("path",),
    "file_contains": ("path", "text"),
    "file_equals": ("path", "text"),
    "stdout_contains": ("text",),
    "exit_code": ("code",),
    "command": ("run",),
    "all": ("of",),
}
"""Each verifier type and the keys it requires."""

_TASK_FIELDS = ("id", "prompt", "verifier", "files", "setup", "metadata")
_MAX_FILE_READ = 16 * 1024 * 1024
"""A file verifier reads at most this many bytes of the file."""


def _check_relative_path(path: object, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} must be a non-empty string, not {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(
            f"{what} must be relative to the working directory, without '..': {path!r}"
        )
    return path


def _validate_verifier(verifier: object, where: str = "verifier") -> dict[str, Any]:
    if not isinstance(verifier, Mapping):
        raise ValueError(f"{where} must be a dict with a 'type', not {verifier!r}")
    kind = verifier.get("type")
    if not isinstance(kind, str) or kind not in VERIFIER_TYPES:
        raise ValueError(
            f"{where} has unknown type {kind!r}; known types: {', '.join(VERIFIER_TYPES)}"
        )
    missing = [key for key in VERIFIER_TYPES[kind] if key not in verifier]
    if missing:
        raise ValueError(f"{where} of type {kind!r} lacks {', '.join(map(repr, missing))}")
    result = dict(verifier)
    if "path" in VERIFIER_TYPES[kind]:
        _check_relative_path(verifier["path"], f"{where}'s path")
    if "text" in VERIFIER_TYPES[kind] and not isinstance(verifier["text"], str):
        raise ValueError(f"{where}'s text must be a string, not {verifier['text']!r}")
    if kind == "exit_code":
        code = verifier["code"]
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < 256:
            raise ValueError(f"{where}'s code must be an int in [0, 255], not {code!r}")
    if kind == "command" and not isinstance(verifier["run"], str):
        raise ValueError(f"{where}'s run must be a shell command string, not {verifier['run']!r}")
    if kind == "all":
        parts = verifier["of"]
        if isinstance(parts, (str, Mapping)) or not isinstance(parts, Sequence) or not parts:
            raise ValueError(f"{where}'s 'of' must be a non-empty list of verifiers")
        result["of"] = [
            _validate_verifier(part, f"{where}.of[{i}]") for i, part in enumerate(parts)
        ]
    return result


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: an id, the prompt an agent sees, and how success is checked.

    Args:
        id: unique within its task set.
        prompt: what the agent is asked to do.
        verifier: ``{"type": ..., ...}``, see the module's table of verifier types.
        files: files written into the fresh working directory at reset (relative path ->
            text).
        setup: a shell script run in the working directory at reset, after ``files`` are
            written (e.g. to generate data); empty for none.
        metadata: anything else (difficulty, source, ...); not used by the env.

    Raises:
        ValueError: a field is missing or malformed (e.g. an unknown verifier type).

    """

    id: str
    prompt: str
    verifier: dict[str, Any] = dataclasses.field(hash=False)
    files: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)
    setup: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"a task id must be a non-empty string, not {self.id!r}")
        where = f"task {self.id!r}"
        if not isinstance(self.prompt, str):
            raise ValueError(f"{where}: prompt must be a string")
        if not isinstance(self.setup, str):
            raise ValueError(f"{where}: setup must be a shell script string")
        if not isinstance(self.files, Mapping) or not all(
            isinstance(text, str) for text in self.files.values()
        ):
            raise ValueError(f"{where}: files must map relative paths to text")
        for path in self.files:
            _check_relative_path(path, f"{where}: a file path")
        if not isinstance(self.metadata, Mapping):
            raise ValueError(f"{where}: metadata must be a dict")
        # Frozen: set the normalised copies (callers' dicts are not shared, nor mutated).
        object.__setattr__(
            self, "verifier", _validate_verifier(self.verifier, f"{where}: verifier")
        )
        object.__setattr__(self, "files", dict(self.files))
        object.__setattr__(self, "metadata", dict(self.metadata))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Make a task from a record; ``verifier`` may also be a JSON string (as in datasets).

        Raises:
            ValueError: an unknown key, a missing one, or a malformed value.

        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a task must be a dict, not {type(data).__name__}")
        unknown = sorted(set(data) - set(_TASK_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown task keys {unknown} (known: {', '.join(_TASK_FIELDS)}); put extra "
                "data under 'metadata'"
            )
        missing = [key for key in ("id", "prompt", "verifier") if key not in data]
        if missing:
            raise ValueError(f"a task lacks {', '.join(map(repr, missing))}: {dict(data)!r}")
        record = dict(data)
        if isinstance(record["verifier"], str):
            try:
                record["verifier"] = json.loads(record["verifier"])
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"task {record['id']!r}: verifier is not valid JSON: {exc}"
                ) from exc
        return cls(**record)

    def to_dict(self) -> dict[str, Any]:
        """Return the task as a JSON-compatible record (what :meth:`from_dict` reads)."""
        return dataclasses.asdict(self)


def _drop_nulls(value: Any) -> Any:
    """Remove ``None`` values from dicts, recursively: columnar formats fill absent keys so."""
    if isinstance(value, Mapping):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_nulls(item) for item in value]
    return value


def _from_columnar(row: Mapping[str, Any]) -> Task:
    record = {key: value for key, value in row.items() if value is not None}
    for key in ("verifier", "files"):
        if key in record:
            record[key] = _drop_nulls(record[key])
    return Task.from_dict(record)


class TaskSet(Sequence[Task]):
    """An ordered collection of tasks with unique ids.

    Args:
        tasks: :class:`Task` objects or records (dicts) for :meth:`Task.from_dict`.
        name: a label for messages (e.g. the file it came from).

    Raises:
        ValueError: a malformed task, or two tasks with the same id.

    """

    def __init__(self, tasks: Iterable[Task | Mapping[str, Any]], *, name: str = "tasks") -> None:
        self.name = name
        self._tasks: list[Task] = []
        self._by_id: dict[str, Task] = {}
        for task in tasks:
            if not isinstance(task, Task):
                task = Task.from_dict(task)
            if task.id in self._by_id:
                raise ValueError(f"{name}: duplicate task id {task.id!r}")
            self._tasks.append(task)
            self._by_id[task.id] = task

    def __len__(self) -> int:
        return len(self._tasks)

    @overload
    def __getitem__(self, index: int) -> Task: ...

    @overload
    def __getitem__(self, index: slice) -> TaskSet: ...

    def __getitem__(self, index: int | slice) -> Task | TaskSet:
        if isinstance(index, slice):
            return TaskSet(self._tasks[index], name=self.name)
        return self._tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskSet) and self._tasks == other._tasks

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TaskSet({self.name!r}, {len(self)} tasks)"

    @property
    def ids(self) -> list[str]:
        """The task ids, in order."""
        return [task.id for task in self._tasks]

    def by_id(self, task_id: str) -> Task:
        """Return the task with id ``task_id``.

        Raises:
            KeyError: no such task; the message lists the known ids.

        """
        try:
            return self._by_id[task_id]
        except KeyError:
            raise KeyError(
                f"{self.name} has no task {task_id!r}; its tasks: {', '.join(self.ids)}"
            ) from None

    def sample(self, rng: np.random.Generator | random.Random | int | None = None) -> Task:
        """Return a task chosen uniformly with ``rng`` (e.g. an env's ``np_random``, or a seed).

        Raises:
            ValueError: the set is empty.

        """
        if not self._tasks:
            raise ValueError(f"{self.name} is empty: no task to sample")
        if isinstance(rng, random.Random):
            return self._tasks[rng.randrange(len(self._tasks))]
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return self._tasks[int(generator.integers(len(self._tasks)))]

    def to_records(self) -> list[dict[str, Any]]:
        """Return the tasks as JSON-compatible records (e.g. to pass to a remote env)."""
        return [task.to_dict() for task in self._tasks]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, name: str = "tasks") -> TaskSet:
        """Make a task set from records (dicts), as :meth:`Task.from_dict` reads them."""
        return cls(records, name=name)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> TaskSet:
        """Load a JSON Lines file: one task object per line; blank lines are skipped.

        Raises:
            ValueError: a line is not JSON or not a valid task; the message names the line.

        """
        return cls._parse_jsonl(Path(path).read_text(encoding="utf-8"), str(path))

    @classmethod
    def _parse_jsonl(cls, text: str, source: str) -> TaskSet:
        tasks = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                tasks.append(Task.from_dict(json.loads(line)))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"{source}:{lineno}: {exc}") from exc
        return cls(tasks, name=source)

    @classmethod
    def from_parquet(cls, path: str | Path) -> TaskSet:
        """Load a Parquet file with columns ``id``, ``prompt``, ``verifier`` (+ optional ones).

        ``verifier`` may be a struct column or a JSON string column; nulls (how a struct
        column says "absent key") are dropped.

        Raises:
            ImportError: pyarrow is not installed.
            ValueError: a row is not a valid task.

        """
        try:
            parquet: Any = importlib.import_module("pyarrow.parquet")
        except ImportError as exc:
            raise ImportError(
                "TaskSet.from_parquet needs pyarrow, which is not installed: pip install pyarrow"
            ) from exc
        rows: list[dict[str, Any]] = parquet.read_table(str(path)).to_pylist()
        return cls._from_rows(rows, str(path))

    @classmethod
    def from_hf_dataset(cls, dataset: Any, *, name: str = "hf-dataset") -> TaskSet:
        """Convert an in-memory Hugging Face ``datasets.Dataset`` (or any iterable of rows).

        Nothing is downloaded: load the dataset first (``datasets.load_dataset(...)[split]``,
        ``Dataset.from_list``, ...). Its columns are read as :meth:`from_parquet` reads them;
        drop extra columns first (``dataset.select_columns``) or move them under ``metadata``.

        Raises:
            TypeError: a ``DatasetDict`` (choose a split) or something that is not rows.
            ValueError: a row is not a valid task.

        """
        if isinstance(dataset, Mapping):
            splits = ", ".join(map(repr, dataset))
            raise TypeError(f"pass one split of the DatasetDict (e.g. dataset['train']): {splits}")
        if not isinstance(dataset, Iterable):
            raise TypeError(f"expected a datasets.Dataset, not {type(dataset).__name__}")
        return cls._from_rows(dataset, name)

    @classmethod
    def _from_rows(cls, rows: Iterable[Mapping[str, Any]], source: str) -> TaskSet:
        tasks = []
        for index, row in enumerate(rows):
            try:
                tasks.append(_from_columnar(row))
            except ValueError as exc:
                raise ValueError(f"{source}: row {index}: {exc}") from exc
        return cls(tasks, name=source)

    @classmethod
    def builtin(cls) -> TaskSet:
        """Return the built-in shell tasks (``openenv_gym/envs/terminal_tasks.jsonl``).

        Raises:
            FileNotFoundError: the file was not installed with the package.

        """
        resource = resources.files("openenv_gym.envs").joinpath(BUILTIN_RESOURCE)
        if not resource.is_file():
            raise FileNotFoundError(
                f"openenv_gym/envs/{BUILTIN_RESOURCE} is not installed with openenv_gym "
                "(missing from the package data?)"
            )
        return cls._parse_jsonl(resource.read_text(encoding="utf-8"), f"builtin:{BUILTIN_RESOURCE}")


@dataclasses.dataclass(frozen=True)
class VerifierContext:
    """What a verifier checks: the working directory and the last command's result.

    Attributes:
        workdir: the episode's working directory.
        stdout: the last command's stdout (decoded; ``""`` before the first command).
        exit_code: the last command's exit code (``None`` before the first command).
        run: runs a shell command in ``workdir`` (not an agent step) and returns its exit code.

    """

    workdir: Path
    stdout: str
    exit_code: int | None
    run: Callable[[str], int]


def _read_file(context: VerifierContext, path: str) -> str | None:
    """Return the text of ``path`` in the working directory, or ``None`` if absent or outside."""
    root = context.workdir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None  # e.g. a symlink out of the working directory
    with target.open("rb") as file:
        return file.read(_MAX_FILE_READ).decode("utf-8", errors="replace")


def verify(verifier: Mapping[str, Any], context: VerifierContext) -> bool:
    """Return whether ``verifier`` (validated, as a :class:`Task` holds it) passes."""
    kind = verifier["type"]
    if kind == "all":
        return all(verify(part, context) for part in verifier["of"])
    if kind == "stdout_contains":
        return str(verifier["text"]) in context.stdout
    if kind == "exit_code":
        return context.exit_code == int(verifier["code"])
    if kind == "command":
        return context.run(str(verifier["run"])) == 0
    content = _read_file(context, str(verifier["path"]))
    if content is None:
        return False
    if kind == "file_exists":
        return True
    if kind == "file_contains":
        return str(verifier["text"]) in content
    if kind == "file_equals":
        return content.strip() == str(verifier["text"]).strip()
    raise ValueError(f"unknown verifier type {kind!r}")
