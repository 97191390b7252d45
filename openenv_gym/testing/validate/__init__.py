"""``openenv-gym validate``: the project's differential checks, pointed at any env or server.

Three levels (see ``docs/validate.md`` for the catalogue of checks):

- ``protocol``: the compliance suite (:mod:`openenv_gym.testing.compliance`) against the server;
- ``contract``: Gymnasium's rules on the remote env and the in-process one, diffed step by step;
- ``quality``: rewards, episode lengths, the reference-policy gap, latency, throughput, memory.

Use::

    from openenv_gym.testing.validate import validate
    report = validate("CartPole-v1", levels=("contract",))
    assert report.exit_code == 0, report.failures
"""

from openenv_gym.testing.validate.results import CheckResult, Report
from openenv_gym.testing.validate.runner import LEVELS, validate

__all__ = ["LEVELS", "CheckResult", "Report", "validate"]
