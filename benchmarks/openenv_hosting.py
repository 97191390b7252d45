"""Hosting an OpenEnv ``Environment``: openenv-gym's batched server vs OpenEnv's own server.

    python benchmarks/openenv_hosting.py                 # table
    python benchmarks/openenv_hosting.py --json          # JSON on stdout
    python benchmarks/openenv_hosting.py --json out.json --duration 1 --repeats 1

The benchmark is :mod:`openenv_gym.bench.openenv_hosting`; ``--help`` lists its options.
"""

from openenv_gym.bench.openenv_hosting import main

if __name__ == "__main__":
    main()
