"""Native engines on the server side: how the operator names them, and what sessions get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from openenv_gym.cli import main
from openenv_gym.errors import VectorizationError
from openenv_gym.server.catalog import EnvCatalog
from openenv_gym.server.engines import VectorEntryPoint, vector_entry_point
from openenv_gym.server.hosting import HostedSpec, load_hosting_file
from openenv_gym.server.native_host import NativeHost
from openenv_gym.testing.optional import require_module
from openenv_gym.testing.vector_envs import CountingSameStepVectorEnv

FACTORY = "openenv_gym.testing.vector_envs:counting_vector_env"


def test_native_engines_hosting_file_names_an_engine_for_an_id(tmp_path: Path) -> None:
    path = tmp_path / "hosting.toml"
    path.write_text(f'[[env]]\nspec = "CartPole-v1"\nvector_entry_point = "{FACTORY}"\n')
    catalog = EnvCatalog(load_hosting_file(path))
    hosted = catalog.hosted("CartPole-v1")
    assert isinstance(hosted.spec.vector_entry_point, VectorEntryPoint)
    host = NativeHost(hosted, {}, num_envs=3, autoreset_mode=None)
    engine = CountingSameStepVectorEnv(3)
    np.testing.assert_array_equal(host.reset(2, None)[0], engine.reset(seed=2)[0], strict=True)
    actions = np.array([1, 0, 1])
    for _ in range(6):
        got, want = host.step(actions), engine.step(actions)
        np.testing.assert_array_equal(got[0], want[0], strict=True)
    assert host.autoreset_mode is AutoresetMode.SAME_STEP
    host.close()
    (tmp_path / "bad.toml").write_text('[[env]]\nspec = "CartPole-v1"\nvector_entry_point = 3\n')
    with pytest.raises(ValueError, match=r"vector_entry_point must be a string"):
        load_hosting_file(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("engine", "match"),
    [
        ("envpool:NoSuchTask-v9", r"envpool has no such task"),
        ("ale:no_such_game", r"ale-py has no ROM"),
        ("openenv_gym.testing.vector_envs:nothing_here", r"no VectorEnv class or factory"),
        ("no_such_module_xyz:Engine", r"No module named 'no_such_module_xyz'"),
        ("justaname", r"expected envpool:<task>, ale:<game> or module:attr"),
    ],
)
def test_native_engines_unknown_engines_fail_at_start_naming_them(engine: str, match: str) -> None:
    require_module("envpool", family="envpool", install="pip install 'openenv-gym[envpool]'")
    require_module("ale_py", family="ale", install="pip install 'openenv-gym[ale]'")
    with pytest.raises(ValueError, match=match):
        EnvCatalog([HostedSpec("CartPole-v1", vector_entry_point=engine)])
    if ":" in engine and not engine.startswith("openenv_gym"):
        with pytest.raises((ValueError, ImportError), match=match):
            vector_entry_point(engine)


def test_native_engines_serve_flag_needs_id_and_engine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--vector-entry-point", "CartPole-v1"]) == 2
    assert "expected ID=ENGINE" in capsys.readouterr().err


def test_native_engines_engine_spec_refuses_sync_sessions() -> None:
    require_module("envpool", family="envpool", install="pip install 'openenv-gym[envpool]'")
    hosted = EnvCatalog(["envpool:CartPole-v1"]).hosted("envpool:CartPole-v1")
    with pytest.raises(VectorizationError, match=r"'envpool:CartPole-v1'.*native vector env only"):
        hosted.factory({})


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_native_engines_ale_is_built_in_the_mode_asked(mode: AutoresetMode) -> None:
    require_module("ale_py", family="ale", install="pip install 'openenv-gym[ale]'")
    hosted = EnvCatalog(["ale:Pong"]).hosted("ale:Pong")
    host = NativeHost(hosted, {}, num_envs=2, autoreset_mode=mode)
    described: dict[str, Any] = host.describe()
    assert described["autoreset_mode"] == mode.value
    assert host.get_attr("autoreset_mode") is mode
    host.close()
