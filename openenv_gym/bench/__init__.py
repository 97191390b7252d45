"""Benchmarks behind ``openenv-gym bench`` and the scripts in ``benchmarks/``.

They live in the package so the command works from an installed wheel; optional tools
(matplotlib, tqdm, openenv) are imported only where they are used.
"""
