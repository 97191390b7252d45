"""Fixtures shared by the Docker tests of several packages.

Without a Docker engine they skip with a reason that says how to enable them; with
OPENENV_GYM_REQUIRE_ALL=1 (as CI sets) or OPENENV_GYM_REQUIRE_DOCKER=1 that skip becomes a
failure (``openenv_gym.testing.optional``). The image is built
offline by `.ci/run`, or by the ``docker_image`` fixture when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from openenv_gym.testing.optional import unavailable

DOCKER_IMAGE = os.environ.get("OPENENV_GYM_TEST_IMAGE", "openenv-gym:latest")


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """A Docker SDK client of a running engine (skip or fail without one)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no SDK, or no engine
        unavailable(
            "docker",
            f"no Docker engine ({type(exc).__name__}: {exc}); install one (Debian: "
            "apt-get install docker.io && dockerd &) and pip install 'openenv-gym[docker]'",
        )
    return client


@pytest.fixture(scope="session")
def docker_image(docker_client: Any) -> str:
    """The server image's tag, built offline first if it is missing."""
    import docker.errors

    try:
        docker_client.images.get(DOCKER_IMAGE)
    except docker.errors.ImageNotFound:
        from openenv_gym.providers.docker_image import build_image

        build_image(tag=DOCKER_IMAGE, offline=True, progress=lambda line: None)
    return DOCKER_IMAGE


@pytest.fixture
def containers_before(docker_client: Any) -> Iterator[None]:
    """Fail the test if it leaves an openenv-gym container behind."""
    from openenv_gym.providers.docker import list_containers

    before = {c.id for c in list_containers()}
    yield
    leaked = {c.id for c in list_containers()} - before
    assert not leaked, f"containers left behind: {leaked}"
