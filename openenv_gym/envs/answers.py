"""AnswerEnv: single-turn text tasks, scored on the server (what LLM trainers call a reward).

Each episode draws a task ``{"id", "prompt", "answer"}`` from its task set (with the env's
seeded ``np_random``, or by id with ``reset(options={"task": id})``) and observes the prompt;
one step submits a completion and ends the episode with its score:

- ``"exact"``: 1.0 when the completion, stripped, is the answer, else 0.0;
- ``"chars"``: the fraction of positions where the completion has the answer's character,
  over the longer of the two (extra characters cost as much as missing ones), so a policy that
  gets closer gets more: a signal even a tiny model can climb.

A trainer's reward function thus calls the server: ``reset(seed=s)`` gives the prompt a
dataset row was made from, ``step(completion)`` its reward (``examples/trl_grpo.py`` does so for
a whole batch in one message per shard). Host it with
``openenv-gym serve openenv_gym.envs.answers:AnswerEnv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import gymnasium
from gymnasium import spaces

__all__ = ["CHARSET", "AnswerEnv", "repeat_tasks", "score"]

CHARSET = "".join(chr(code) for code in range(0x20, 0x7F)) + "\t\n"
"""Characters of prompts and completions: printable ASCII, tab and newline."""
MAX_LENGTH = 256
Scoring = Literal["exact", "chars"]


def score(completion: str, answer: str, scoring: Scoring) -> float:
    """Return the score of ``completion`` against ``answer`` (see the module's table).

    Raises:
        ValueError: an unknown ``scoring``.

    """
    if scoring == "exact":
        return 1.0 if completion.strip() == answer.strip() else 0.0
    if scoring == "chars":
        longest = max(len(completion), len(answer))
        if longest == 0:
            return 1.0
        return sum(a == b for a, b in zip(completion, answer, strict=False)) / longest
    raise ValueError(f"scoring must be 'exact' or 'chars', not {scoring!r}")


def repeat_tasks(alphabet: str = "abcd", length: int = 4) -> list[dict[str, str]]:
    """Return the task set "repeat the letter": prompt ``"b="``, answer ``"bbbb"``, per letter.

    Raises:
        ValueError: an empty alphabet, a repeated letter, or ``length < 1``.

    """
    if not alphabet or len(set(alphabet)) != len(alphabet) or length < 1:
        raise ValueError("alphabet must hold distinct letters and length be >= 1")
    return [
        {"id": f"repeat-{letter}", "prompt": f"{letter}=", "answer": letter * length}
        for letter in alphabet
    ]


def _load(
    tasks: Iterable[Mapping[str, Any]] | str | os.PathLike[str] | None,
) -> list[dict[str, str]]:
    if tasks is None:
        return repeat_tasks()
    if isinstance(tasks, (str, os.PathLike)):
        lines = Path(tasks).read_text(encoding="utf-8").splitlines()
        tasks = [json.loads(line) for line in lines if line.strip()]
    records = []
    for index, task in enumerate(tasks):
        missing = [key for key in ("id", "prompt", "answer") if key not in task]
        if missing or not all(isinstance(task[k], str) for k in ("id", "prompt", "answer")):
            raise ValueError(f"task {index} needs string 'id', 'prompt' and 'answer': {task!r}")
        records.append({key: str(task[key]) for key in ("id", "prompt", "answer")})
    if not records:
        raise ValueError("the task set is empty")
    if len({task["id"] for task in records}) != len(records):
        raise ValueError("task ids must be unique")
    return records


class AnswerEnv(gymnasium.Env[str, str]):
    """Answer a prompt in one step; the reward is the answer's score.

    Args:
        tasks: task records (``id``, ``prompt``, ``answer``), or a ``.jsonl`` file of them;
            default :func:`repeat_tasks`.
        scoring: ``"chars"`` (default) or ``"exact"``.
        render_mode: ``"ansi"`` renders the prompt and the last completion.

    The reset info holds ``task_id``; the step info ``task_id`` and ``exact`` (whether the
    completion was exactly right). Stepping a finished episode raises ``RuntimeError``.

    Raises:
        ValueError: a malformed task set or an unknown scoring.

    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        tasks: Iterable[Mapping[str, Any]] | str | os.PathLike[str] | None = None,
        *,
        scoring: Scoring = "chars",
        render_mode: str | None = None,
    ) -> None:
        score("", "", scoring)  # validates the name
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.tasks = _load(tasks)
        self.scoring: Scoring = scoring
        self.render_mode = render_mode
        self.observation_space = spaces.Text(MAX_LENGTH, min_length=0, charset=CHARSET)
        self.action_space = spaces.Text(MAX_LENGTH, min_length=0, charset=CHARSET)
        self._task: dict[str, str] | None = None
        self._completion: str | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Draw a task (or take ``options["task"]``, an id) and observe its prompt.

        Raises:
            KeyError: ``options["task"]`` names no task.

        """
        super().reset(seed=seed)
        choice = (options or {}).get("task")
        if choice is None:
            self._task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        else:
            by_id = {task["id"]: task for task in self.tasks}
            if choice not in by_id:
                raise KeyError(f"no task {choice!r}; tasks: {', '.join(by_id)}")
            self._task = by_id[choice]
        self._completion = None
        return self._task["prompt"], {"task_id": self._task["id"]}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Submit the completion ``action``; the episode ends with its score.

        Raises:
            RuntimeError: no episode in progress (call ``reset``).
            ValueError: ``action`` is not a string.

        """
        if self._task is None or self._completion is not None:
            raise RuntimeError("no episode in progress: call reset() before step()")
        if not isinstance(action, str):
            raise ValueError(f"a completion must be a string, not {type(action).__name__}")
        self._completion = action
        reward = score(action, self._task["answer"], self.scoring)
        exact = score(action, self._task["answer"], "exact") == 1.0
        return "", reward, True, False, {"task_id": self._task["id"], "exact": exact}

    def render(self) -> str | None:
        """Return (``"ansi"``) the prompt and the last completion."""
        if self.render_mode != "ansi" or self._task is None:
            return None
        return f"{self._task['prompt']}{self._completion or ''}\n"
