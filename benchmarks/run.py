"""Run the benchmark suite: the same as ``openenv-gym bench`` (options alike)."""

from openenv_gym.bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main())
