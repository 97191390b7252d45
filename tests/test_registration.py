"""Ids by name in processes that never imported openenv_gym (Ray workers, scripts, subprocesses)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_registration_module_prefix_works_in_a_fresh_process() -> None:
    done = _run(
        """
        import gymnasium, sys
        assert "openenv_gym" not in sys.modules
        env = gymnasium.make("openenv_gym:openenv/CartPole-v1")
        local = gymnasium.make("CartPole-v1")
        assert (env.reset(seed=3)[0] == local.reset(seed=3)[0]).all()
        assert env.step(1)[0].tolist() == local.step(1)[0].tolist()
        env.close()
        vec = gymnasium.make_vec(
            "openenv_gym:openenv/CartPole-v1", 3, vectorization_mode="vector_entry_point"
        )
        assert vec.reset(seed=0)[0].shape == (3, 4)
        vec.close()
        print("ok")
        """
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_registration_bare_namespace_needs_the_import() -> None:
    done = _run(
        """
        import gymnasium
        try:
            gymnasium.make("openenv/CartPole-v1")
        except gymnasium.error.NamespaceNotFound as exc:
            print("refused:", exc)
        """
    )
    assert done.returncode == 0 and done.stdout.startswith("refused:"), done.stderr


def test_registration_survives_a_find_spec_probe_before_the_import() -> None:
    # TorchRL (and other libraries) probe with find_spec before they import gymnasium; the
    # probe used to consume the import hook, so the ids were never registered.
    done = _run(
        """
        import importlib.util, sys
        import openenv_gym
        assert importlib.util.find_spec("gymnasium") is not None
        assert "gymnasium" not in sys.modules
        import gymnasium
        from openenv_gym.registration import _GymnasiumHook
        hooks = [f for f in sys.meta_path if isinstance(f, _GymnasiumHook)]
        print("openenv/CartPole-v1" in gymnasium.registry, len(hooks))
        """
    )
    assert done.returncode == 0 and done.stdout.split() == ["True", "0"], done.stderr
