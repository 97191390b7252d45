"""The import rules of ARCHITECTURE.md rule 1, checked in clean interpreters and in the source.

Each layer is imported alone in a fresh ``python -c``; what it loaded is compared with what
it must not load. A static scan of the package's import statements checks that no library
module imports ``cli``, ``bench`` or ``testing``.
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import openenv_gym

PACKAGE = pathlib.Path(openenv_gym.__file__).parent

SERVER_CLIENT = ("openenv_gym.server", "openenv_gym.client")

RULES: dict[str, tuple[str, ...]] = {
    "openenv_gym.protocol.codec": (*SERVER_CLIENT, "websockets", "asyncio", "openenv_gym.ws"),
    "openenv_gym.protocol": (*SERVER_CLIENT, "websockets", "asyncio", "openenv_gym.ws"),
    "openenv_gym.errors": (*SERVER_CLIENT, "websockets", "asyncio", "gymnasium"),
    "openenv_gym.ws": SERVER_CLIENT,
    "openenv_gym.ws.client": (*SERVER_CLIENT, "asyncio", "gymnasium"),
    "openenv_gym.ws.handshake": (*SERVER_CLIENT, "asyncio", "gymnasium"),
    "openenv_gym.ws.server": (*SERVER_CLIENT, "gymnasium"),
    "openenv_gym.providers": ("openenv_gym.client", "openenv_gym.server", "gymnasium"),
    "openenv_gym.providers.local": ("openenv_gym.client", "openenv_gym.server", "gymnasium"),
    "openenv_gym.providers.docker": ("openenv_gym.client", "openenv_gym.server", "gymnasium"),
    "openenv_gym": (*SERVER_CLIENT, "asyncio", "openenv_gym.ws"),
    # Layers above the server (interop, mcp, envs) plug in when switched on, never on import.
    "openenv_gym.server": ("openenv_gym.interop", "openenv_gym.mcp", "openenv_gym.envs"),
    "openenv_gym.client": ("openenv_gym.interop", "openenv_gym.mcp", "openenv_gym.server"),
    # Adapters (SB3, ...) sit on the client; the package itself imports no foreign library.
    "openenv_gym.adapters": (*SERVER_CLIENT, "gymnasium", "stable_baselines3", "torch"),
}
"""Module imported alone -> module families it must not load."""

NEVER_IMPORTED = ("openenv_gym.cli", "openenv_gym.bench", "openenv_gym.testing")
ALLOWED_IMPORTERS = {
    "openenv_gym.__main__": {"openenv_gym.cli"},  # ``python -m openenv_gym`` is the CLI
}
"""Module -> the never-imported families it may import anyway."""
CLI_MAY_IMPORT = {"openenv_gym.cli", "openenv_gym.bench", "openenv_gym.testing"}
"""The CLI's own modules, ``bench`` and ``testing`` (``validate`` runs the compliance suite)."""


def _loaded_by(module: str) -> list[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def _in_family(name: str, family: str) -> bool:
    return name == family or name.startswith(f"{family}.")


@pytest.mark.parametrize("module", sorted(RULES))
def test_layers_import_only_what_lies_below(module: str) -> None:
    loaded = _loaded_by(module)
    assert module in loaded
    forbidden = [m for m in loaded if any(_in_family(m, f) for f in RULES[module])]
    assert not forbidden, f"import {module} loads {forbidden}"


def test_layers_codec_import_leaves_gymnasium_registry_alone() -> None:
    code = "import openenv_gym.protocol.codec, sys; print('gymnasium' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "False"  # no gymnasium loaded, so no openenv/<id> doubles its registry


@pytest.mark.parametrize("order", ["openenv_gym first", "gymnasium first"])
def test_layers_package_registers_ids_in_either_import_order(order: str) -> None:
    imports = ["openenv_gym", "gymnasium"]
    if order == "gymnasium first":
        imports.reverse()
    code = (
        f"import {imports[0]}; import {imports[1]}; import sys; "
        "print('openenv/CartPole-v1' in gymnasium.registry, "
        "'openenv_gym.client' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.split() == ["True", "False"]


def test_layers_public_names_resolve_lazily() -> None:
    code = (
        "import gymnasium, openenv_gym; "
        "spec = gymnasium.spec('openenv/CartPole-v1'); "
        "print(spec.id, openenv_gym.RemoteEnv.__name__, openenv_gym.RemoteVectorEnv.__name__, "
        "openenv_gym.ServerConfig.__name__, openenv_gym.serve.__name__, "
        "openenv_gym.errors.OpenEnvError.__name__, openenv_gym.__version__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert out[:6] == [
        "openenv/CartPole-v1",
        "RemoteEnv",
        "RemoteVectorEnv",
        "ServerConfig",
        "run_server",
        "OpenEnvError",
    ]
    assert out[6] == openenv_gym.__version__


def _imports_of(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_layers_no_library_module_imports_cli_bench_or_testing() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("openenv_gym", *path.relative_to(PACKAGE).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        if any(_in_family(module, f) for f in NEVER_IMPORTED[1:]):
            continue  # bench and testing may use each other and the library
        allowed = CLI_MAY_IMPORT if _in_family(module, "openenv_gym.cli") else set()
        allowed = allowed | ALLOWED_IMPORTERS.get(module, set())
        for name in _imports_of(path):
            family = next((f for f in NEVER_IMPORTED if _in_family(name, f)), None)
            if family is not None and family not in allowed:
                offenders.append(f"{module} imports {name}")
    assert not offenders
