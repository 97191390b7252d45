"""A compliance suite any server can run: attacks, fuzzing, faults and leak checks.

Each attack (:mod:`.attacks`) takes a live server as a :class:`Target` and returns an
:class:`AttackResult` with figures; :mod:`.campaign` starts the server each attack needs::

    from openenv_gym.testing.compliance import ATTACKS, run_campaign
    for outcome in run_campaign(ATTACKS):
        print(outcome)

The fuzz campaign (:mod:`.fuzz` and its ``fuzz_*`` modules), the fault scenarios
(:mod:`.faults`) and the leak checks (:mod:`.leaks`) take a live server the same way. Reused by
``tests/testing/`` and the reliability report (:mod:`openenv_gym.bench.reliability`).
"""

from openenv_gym.testing.compliance._support import AttackResult, Target
from openenv_gym.testing.compliance.campaign import ATTACKS, Attack, run_attack, run_campaign

__all__ = ["ATTACKS", "Attack", "AttackResult", "Target", "run_attack", "run_campaign"]
