"""Sample Harbor task folders (Harbor 0.25's format), built FROM the project's offline image.

* ``hello-file``: write a file; ``tests/test.sh`` writes ``reward.txt`` (1 or 0).
* ``word-count``: count words into a file; ``tests/test.sh`` writes ``reward.json`` with named
  components (``reward``, ``exists``, ``exact``), reads a ``[verifier] env`` variable, and the
  task sets ``[agent] timeout_sec``, ``cpus``, ``memory_mb`` and a ``workdir``.

Each holds ``solution/solve.sh`` (the oracle scores 1.0) and a do-nothing agent scores 0.0.
:data:`TASKS_DIR` is the directory to host (``harbor:`` + it).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TASKS_DIR"]

TASKS_DIR = Path(__file__).resolve().parent
