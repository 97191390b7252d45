"""Task, TaskSet and its loaders (JSONL, Parquet, Hugging Face datasets), verifiers, @tool."""

from __future__ import annotations

import inspect
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openenv_gym.envs import Task, TaskSet, is_tool, tool, tools
from openenv_gym.envs.tasks import VerifierContext, verify
from openenv_gym.testing.optional import require_module

RECORDS: list[dict[str, Any]] = [
    {"id": "a", "prompt": "make a", "verifier": {"type": "file_exists", "path": "a.txt"}},
    {
        "id": "b",
        "prompt": "say b",
        "verifier": {"type": "stdout_contains", "text": "b"},
        "files": {"in/b.txt": "b\n"},
        "setup": "echo ready > ready.txt",
    },
    {"id": "c", "prompt": "exit 3", "verifier": {"type": "exit_code", "code": 3}},
    {
        "id": "d",
        "prompt": "both",
        "verifier": {
            "type": "all",
            "of": [
                {"type": "file_contains", "path": "d.txt", "text": "dd"},
                {"type": "command", "run": "test -s d.txt"},
            ],
        },
        "metadata": {"difficulty": 2},
    },
]

FIELDS = ("id", "prompt", "verifier", "files", "setup", "metadata")
COLUMNS = [{key: record.get(key) for key in FIELDS} for record in RECORDS]
"""RECORDS as a table holds them: every column in every row, null where absent."""


def test_task_set_is_an_ordered_sequence_with_ids() -> None:
    tasks = TaskSet(RECORDS, name="demo")
    assert len(tasks) == 4
    assert tasks.ids == ["a", "b", "c", "d"]
    assert [task.id for task in tasks] == tasks.ids
    assert tasks[1].files == {"in/b.txt": "b\n"} and tasks[1].setup.startswith("echo")
    assert tasks[-1].metadata == {"difficulty": 2}
    assert isinstance(tasks[1:3], TaskSet) and tasks[1:3].ids == ["b", "c"]
    assert tasks.by_id("c").verifier == {"type": "exit_code", "code": 3}
    with pytest.raises(KeyError, match=r"no task 'zz'; its tasks: a, b, c, d"):
        tasks.by_id("zz")
    assert TaskSet(tasks.to_records()) == tasks
    assert hash(tasks[0]) == hash(Task.from_dict(RECORDS[0]))  # hashable despite dict fields


def test_sample_is_seeded_and_uniform_over_tasks() -> None:
    tasks = TaskSet(RECORDS)
    assert tasks.sample(7) == tasks.sample(7)
    assert tasks.sample(np.random.default_rng(3)) == tasks.sample(np.random.default_rng(3))
    assert tasks.sample(random.Random(5)) == tasks.sample(random.Random(5))
    rng = np.random.default_rng(0)
    assert {tasks.sample(rng).id for _ in range(200)} == set(tasks.ids)
    with pytest.raises(ValueError, match="empty"):
        TaskSet([]).sample(0)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "x", "prompt": "p"}, "lacks 'verifier'"),
        ({"id": "", "prompt": "p", "verifier": {"type": "exit_code", "code": 0}}, "non-empty"),
        ({"id": "x", "prompt": "p", "verifier": {"type": "magic"}}, "unknown type 'magic'"),
        ({"id": "x", "prompt": "p", "verifier": {"type": "file_contains", "path": "f"}}, "'text'"),
        ({"id": "x", "prompt": "p", "verifier": {"type": "file_exists", "path": "/etc/x"}}, "rel"),
        ({"id": "x", "prompt": "p", "verifier": {"type": "file_exists", "path": "../x"}}, "'..'"),
        ({"id": "x", "prompt": "p", "verifier": {"type": "exit_code", "code": 256}}, r"\[0, 255\]"),
        ({"id": "x", "prompt": "p", "verifier": {"type": "all", "of": []}}, "non-empty list"),
        (
            {"id": "x", "prompt": "p", "verifier": {"type": "all", "of": [{"type": "no"}]}},
            r"of\[0\] has unknown type",
        ),
        (
            {"id": "x", "prompt": "p", "verifier": {"type": "exit_code", "code": 0}, "oops": 1},
            "unknown task keys",
        ),
        (
            {
                "id": "x",
                "prompt": "p",
                "verifier": {"type": "exit_code", "code": 0},
                "files": {"../up": ""},
            },
            "file path",
        ),
        ({"id": "x", "prompt": "p", "verifier": "{not json"}, "not valid JSON"),
    ],
)
def test_malformed_tasks_are_refused_with_the_reason(record: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Task.from_dict(record)


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate task id 'a'"):
        TaskSet([RECORDS[0], RECORDS[0]])


def test_verifier_may_be_a_json_string() -> None:
    task = Task.from_dict(
        {"id": "x", "prompt": "p", "verifier": '{"type": "exit_code", "code": 1}'}
    )
    assert task.verifier == {"type": "exit_code", "code": 1}


def test_from_jsonl_round_trip_and_line_numbers_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    tasks = TaskSet.from_jsonl(path)
    assert tasks == TaskSet(RECORDS) and tasks.name == str(path)
    path.write_text(json.dumps(RECORDS[0]) + "\n{broken\n")
    with pytest.raises(ValueError, match=r"tasks.jsonl:2: "):
        TaskSet.from_jsonl(path)


def test_builtin_tasks_load() -> None:
    tasks = TaskSet.builtin()
    assert 5 <= len(tasks) <= 8
    assert all(task.prompt for task in tasks)


def test_from_parquet(tmp_path: Path) -> None:
    require_module("pyarrow", family="pyarrow", install="pip install pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    # A struct column: pyarrow fills each row's absent keys with nulls, which are dropped.
    pq.write_table(pa.Table.from_pylist(COLUMNS), tmp_path / "struct.parquet")
    assert TaskSet.from_parquet(tmp_path / "struct.parquet") == TaskSet(RECORDS)
    # A JSON string column, as many datasets store nested data.
    rows = [{**r, "verifier": json.dumps(r["verifier"])} for r in COLUMNS]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "json.parquet")
    assert TaskSet.from_parquet(tmp_path / "json.parquet") == TaskSet(RECORDS)


def test_from_parquet_without_pyarrow_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow... raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"needs pyarrow.*pip install pyarrow"):
        TaskSet.from_parquet(tmp_path / "tasks.parquet")


def test_from_hf_dataset() -> None:
    datasets = require_module("datasets", family="datasets", install="pip install datasets")
    dataset = datasets.Dataset.from_list(COLUMNS)
    assert TaskSet.from_hf_dataset(dataset) == TaskSet(RECORDS)
    as_json = datasets.Dataset.from_list(
        [{**r, "verifier": json.dumps(r["verifier"])} for r in COLUMNS]
    )
    assert TaskSet.from_hf_dataset(as_json) == TaskSet(RECORDS)
    with pytest.raises(TypeError, match="one split"):
        TaskSet.from_hf_dataset(datasets.DatasetDict({"train": dataset}))


def test_from_hf_dataset_accepts_any_rows_and_refuses_a_split_dict() -> None:
    assert TaskSet.from_hf_dataset([dict(r) for r in RECORDS]) == TaskSet(RECORDS)
    with pytest.raises(TypeError, match="one split"):
        TaskSet.from_hf_dataset({"train": RECORDS})
    with pytest.raises(ValueError, match="row 0: "):
        TaskSet.from_hf_dataset([{"id": "x"}])


def _context(workdir: Path, stdout: str = "", exit_code: int | None = None) -> VerifierContext:
    import subprocess

    def run(command: str) -> int:
        return subprocess.run(["/bin/sh", "-c", command], cwd=workdir).returncode

    return VerifierContext(workdir=workdir, stdout=stdout, exit_code=exit_code, run=run)


def test_verifiers(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("  hello world\n\n")
    ctx = _context(tmp_path, stdout="out 42\n", exit_code=3)
    passing = [
        {"type": "file_exists", "path": "f.txt"},
        {"type": "file_contains", "path": "f.txt", "text": "lo wo"},
        {"type": "file_equals", "path": "f.txt", "text": "hello world"},
        {"type": "stdout_contains", "text": "42"},
        {"type": "exit_code", "code": 3},
        {"type": "command", "run": "grep -q hello f.txt"},
        {
            "type": "all",
            "of": [{"type": "exit_code", "code": 3}, {"type": "file_exists", "path": "f.txt"}],
        },
    ]
    failing = [
        {"type": "file_exists", "path": "g.txt"},
        {"type": "file_contains", "path": "f.txt", "text": "bye"},
        {"type": "file_equals", "path": "f.txt", "text": "hello"},
        {"type": "stdout_contains", "text": "43"},
        {"type": "exit_code", "code": 0},
        {"type": "command", "run": "false"},
        {
            "type": "all",
            "of": [{"type": "exit_code", "code": 3}, {"type": "file_exists", "path": "x"}],
        },
    ]
    for verifier in passing:
        task = Task(id="t", prompt="", verifier=verifier)
        assert verify(task.verifier, ctx), verifier
    for verifier in failing:
        task = Task(id="t", prompt="", verifier=verifier)
        assert not verify(task.verifier, ctx), verifier
    assert not verify({"type": "exit_code", "code": 0}, _context(tmp_path))  # no command yet


def test_file_verifiers_do_not_follow_links_out_of_the_workdir(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "link.txt").symlink_to(outside)
    verifier = {"type": "file_contains", "path": "link.txt", "text": "secret"}
    assert not verify(verifier, _context(workdir))


class _Tools:
    @tool
    def run(self, command: str, timeout: float = 1.0) -> dict[str, Any]:
        """Run a command."""
        return {"command": command}

    def helper(self) -> None:
        """Not a tool."""


def test_tool_marks_methods_and_keeps_their_signature() -> None:
    assert is_tool(_Tools.run) and is_tool(_Tools().run)
    assert not is_tool(_Tools.helper)
    assert _Tools.run.__doc__ == "Run a command."
    assert list(inspect.signature(_Tools.run).parameters) == ["self", "command", "timeout"]
    obj = _Tools()
    listed = tools(obj)
    assert list(listed) == ["run"] and listed["run"]("ls") == {"command": "ls"}
