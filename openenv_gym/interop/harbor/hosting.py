"""The ``harbor:`` spec: an operator hosts a directory of Harbor tasks by naming it.

``openenv-gym serve harbor:/srv/tasks`` (or ``spec = "harbor:/srv/tasks"`` in a hosting file,
with fixed kwargs such as ``{ max_steps = 32, oracle = false, task = "hello" }``) hosts
:class:`~openenv_gym.interop.harbor.env.HarborEnv` over that directory under the id
``harbor:<directory name>`` (here ``harbor:tasks``: Gymnasium ids hold no ``/``). Clients name
that id, never a path, and choose a task by its folder name with
``reset(options={"task": NAME})``; the directory is bound on the server and is not a keyword
argument a client could pass.
"""

from __future__ import annotations

import functools
import re

from gymnasium.envs.registration import EnvSpec

from openenv_gym.interop.harbor.task import TaskDir

__all__ = ["HARBOR_PREFIX", "harbor_spec"]

HARBOR_PREFIX = "harbor:"


def harbor_spec(spec: str) -> EnvSpec:
    """Return the gymnasium spec of ``harbor:/path``: HarborEnv over that directory.

    The directory is read now, so a broken task stops the server at start-up.

    Raises:
        TaskFormatError: the directory holds no task, or an invalid one (a ``ValueError``).

    """
    from openenv_gym.interop.harbor.env import HarborEnv

    tasks = TaskDir(spec[len(HARBOR_PREFIX) :])
    # Gymnasium's ids hold no "/": the spec's id names the directory, clients use the spec.
    env_id = HARBOR_PREFIX + (re.sub(r"[^\w.-]+", "-", tasks.root.name) or "tasks")
    return EnvSpec(id=env_id, entry_point=functools.partial(HarborEnv, tasks))
