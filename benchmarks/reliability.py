"""Run the reliability report (load, faults, fuzz, leaks, attacks) on local servers.

    python benchmarks/reliability.py [--sessions 64 --envs 16 --duration 60] [--json PATH]
    python benchmarks/reliability.py --quick          # about 20 s, plus 60 s of attacks

The report is :mod:`openenv_gym.bench.reliability`; ``--help`` lists its options.
"""

from openenv_gym.bench.reliability import main

if __name__ == "__main__":
    raise SystemExit(main())
