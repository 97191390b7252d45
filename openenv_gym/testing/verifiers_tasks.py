"""A tiny verifiers taskset for tests and examples: arithmetic questions, exact-match reward.

Written the verifiers way (``verifiers.v1``): a ``TaskData`` with the answer, a ``Task`` whose
``@vf.reward`` compares the reply with it (and a ``@vf.metric`` of the reply's length), and a
``Taskset`` that yields one task per row of a ``datasets.Dataset`` built from a small list (no
download). Serve it with ``openenv-gym serve verifiers:openenv_gym.testing.verifiers_tasks``.
"""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import verifiers.v1 as vf

__all__ = ["ArithmeticTaskset", "rows"]

QUESTIONS = (("2 + 3", "5"), ("7 * 6", "42"), ("10 - 4", "6"), ("9 / 3", "3"), ("1 + 1", "2"))


def rows() -> datasets.Dataset:
    """Return the taskset's rows: ``question`` and ``answer`` columns."""
    return datasets.Dataset.from_list([{"question": q, "answer": a} for q, a in QUESTIONS])


class ArithmeticData(vf.TaskData):
    """A question's row: the prompt and the expected answer."""

    answer: str


class ArithmeticTask(vf.Task[ArithmeticData]):
    """Reward 1.0 when the reply, stripped, equals the answer."""

    @vf.reward
    async def exact(self, task: ArithmeticData, trace: vf.Trace) -> float:
        """Exact match of the reply with the answer."""
        return float(trace.last_reply.strip() == task.answer)

    @vf.metric
    async def reply_chars(self, trace: vf.Trace) -> float:
        """Measure the reply's length in characters."""
        return float(len(trace.last_reply))


class ArithmeticTaskset(vf.Taskset[ArithmeticTask, vf.TasksetConfig]):
    """One task per row of :func:`rows`."""

    def load(self) -> Iterator[ArithmeticTask]:
        """Yield the tasks."""
        for i, row in enumerate(rows()):
            data = ArithmeticData(
                name=f"q{i}",
                prompt=f"What is {row['question']}? Reply with the number only.",
                answer=row["answer"],
            )
            yield ArithmeticTask(data, self.config.task)
