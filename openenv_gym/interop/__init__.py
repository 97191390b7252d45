"""Interop with OpenEnv: its models as spaces, its envs hosted batched, its protocol served.

``openenv-core`` stays optional: it is imported only where it is used.
"""
