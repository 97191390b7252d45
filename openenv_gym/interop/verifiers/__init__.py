"""verifiers (``verifiers`` 0.4, ``verifiers.v1``), both ways.

- Hosting (:mod:`~openenv_gym.interop.verifiers.hosted`): ``openenv-gym serve
  verifiers:<taskset id or module>`` serves a verifiers taskset as a gymnasium env
  (``VerifiersTaskEnv``): ``reset`` samples a task and observes its prompt, one ``step``
  submits the completion, the reward is the task's own ``@vf.reward`` scoring.
- Driven by verifiers: its ``OpenEnvTaskset(base_url=...)`` talks OpenEnv's protocol, which
  every server of ours speaks (see :mod:`openenv_gym.interop.openenv`); nothing of this
  package is needed for that.

``verifiers`` pins ``mcp==2.0.0`` while this library's MCP code needs ``mcp>=2.3``: install
it with ``pip install --no-deps verifiers==0.4.0`` after the ``verifiers`` extra (which holds
its other dependencies); it runs with mcp 2.3.
"""

from __future__ import annotations
