"""Interop with other ecosystems: one package per ecosystem, each both ways.

- :mod:`openenv_gym.interop.openenv`: OpenEnv (its Environment classes hosted batched, its
  ``/ws`` protocol served on our port, its servers driven from Gymnasium).

Optional dependencies are imported only where they are used.
"""
