"""A compliance suite any server can run: the attacks of the trust-boundary campaign.

Each attack (:mod:`.attacks`) takes a live server as a :class:`Target` and returns an
:class:`AttackResult` with figures; :mod:`.campaign` starts the server each attack needs::

    from openenv_gym.testing.compliance import ATTACKS, run_campaign
    for outcome in run_campaign(ATTACKS):
        print(outcome)

Reused by ``tests/testing/test_attacks.py`` and ``benchmarks/reliability.py`` (section e).
"""

from openenv_gym.testing.compliance._support import AttackResult, Target
from openenv_gym.testing.compliance.campaign import ATTACKS, Attack, run_attack, run_campaign

__all__ = ["ATTACKS", "Attack", "AttackResult", "Target", "run_attack", "run_campaign"]
