"""Harbor itself, offline, in a container: Debian trixie (Python 3.13) + a host wheelhouse.

Harbor needs Python >= 3.12 and this project runs on 3.10+; so Harbor's own runner runs in an
image built with no registry: ``debootstrap trixie`` imported as :data:`TRIXIE_BASE`, then
``docker build --network none`` installing ``harbor`` and ``openenv-gym`` from wheels
downloaded on the host for CPython 3.13 (:func:`build_runner_image`). :func:`run_harbor` runs
``harbor run`` there with our environment (``--env
openenv_gym.interop.harbor.environment:OpenEnvGymEnvironment``) against a server on this
machine's loopback (the container shares the host's network namespace for that), and returns
the rewards of Harbor's own trial results. The image is built once per machine; the
openenv-gym code it runs is this tree's, mounted over the installed copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from openenv_gym.errors import ImageBuildError
from openenv_gym.providers.docker_image import PROJECT_ROOT, _docker_client

PACKAGE_DIR = Path(__file__).resolve().parent.parent

__all__ = ["HARBOR_VERSION", "RUNNER_IMAGE", "TRIXIE_BASE", "build_runner_image", "run_harbor"]

HARBOR_VERSION = "0.25.0"
TRIXIE_BASE = "openenv-gym-base:trixie"
RUNNER_IMAGE = f"openenv-gym-harbor-runner:{HARBOR_VERSION}"
_PLATFORMS = [
    *(f"manylinux_2_{minor}_x86_64" for minor in range(41, 16, -1)),
    "manylinux2014_x86_64",
    "linux_x86_64",
]
_DOCKERFILE = """\
FROM {base}
COPY wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/harbor \\
 && /opt/harbor/bin/pip install --no-index --find-links /tmp/wheelhouse --no-cache-dir \\
        harbor=={version} openenv-gym \\
 && rm -rf /tmp/wheelhouse
ENV PATH=/opt/harbor/bin:$PATH PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True
"""


def _run(args: Sequence[str], what: str, progress: Callable[[str], None]) -> None:
    progress(f"$ {' '.join(args)}")
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ImageBuildError(f"{what} failed (exit {done.returncode}):\n{tail}")


def _exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_runner_image(
    *,
    tag: str = RUNNER_IMAGE,
    mirror: str = "http://deb.debian.org/debian",
    progress: Callable[[str], None] = print,
    rebuild: bool = False,
) -> str:
    """Build (once) the image holding Harbor and openenv-gym, with no registry.

    Needs root, ``debootstrap`` and PyPI (for the wheelhouse) on the host; the image build
    itself runs with the network off.

    Raises:
        ImageBuildError: a step failed; the text holds its last lines.

    """
    client = _docker_client()
    if not rebuild and _exists(client, tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap not found: apt-get install -y debootstrap")
    with tempfile.TemporaryDirectory(prefix="openenv-gym-harbor-runner-") as tmp:
        work = Path(tmp)
        if rebuild or not _exists(client, TRIXIE_BASE):
            rootfs = work / "rootfs"
            include = "--include=python3,python3-venv,ca-certificates"
            _run(
                ["debootstrap", "--variant=minbase", include, "trixie", str(rootfs), mirror],
                "debootstrap trixie",
                progress,
            )
            tarball = work / "rootfs.tar"
            _run(
                ["tar", "-C", str(rootfs), "-cf", str(tarball), "."], "packing the rootfs", progress
            )
            repository, _, version = TRIXIE_BASE.partition(":")
            client.api.import_image(src=str(tarball), repository=repository, tag=version)
            shutil.rmtree(rootfs, ignore_errors=True)
            tarball.unlink()
        context = work / "context"
        wheels = context / "wheelhouse"
        wheels.mkdir(parents=True)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        _run(
            [*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(PROJECT_ROOT)],
            "building the openenv-gym wheel",
            progress,
        )
        ours = sorted(wheels.glob("openenv_gym-*.whl"))[-1]
        target = ["--only-binary=:all:", "--python-version", "3.13", "--implementation", "cp"]
        target += [arg for platform in _PLATFORMS for arg in ("--platform", platform)]
        _run(
            [
                *pip,
                "download",
                "-q",
                *target,
                "-d",
                str(wheels),
                str(ours),
                f"harbor=={HARBOR_VERSION}",
            ],
            "downloading wheels for Python 3.13",
            progress,
        )
        (context / "Dockerfile").write_text(
            _DOCKERFILE.format(base=TRIXIE_BASE, version=HARBOR_VERSION)
        )
        for chunk in client.api.build(
            path=str(context), tag=tag, network_mode="none", rm=True, forcerm=True, decode=True
        ):
            if "error" in chunk:
                raise ImageBuildError(f"docker build of {tag} failed: {chunk['error']}")
            text = str(chunk.get("stream") or "").rstrip()
            if text:
                progress(text)
    return tag


def run_harbor(
    tasks: Path,
    *,
    url: str,
    env_id: str,
    agent: str,
    image: str = RUNNER_IMAGE,
    timeout: float = 600.0,
) -> dict[str, dict[str, float] | str]:
    """Run ``harbor run -p TASKS -a AGENT`` on our environment; return each trial's rewards.

    Args:
        tasks: a folder of task folders (mounted read-only).
        url: our server's ``ws://127.0.0.1:PORT`` (the server hosts the same tasks with
            ``sandbox_api = true``).
        env_id: the id the server hosts them under.
        agent: Harbor's agent name (``oracle``, ``nop``).
        image: the runner image (:func:`build_runner_image`).
        timeout: seconds for the whole job.

    Returns:
        task name -> its verifier rewards, or the text of the trial's exception.

    Raises:
        RuntimeError: ``harbor`` failed or wrote no trial results.

    """
    with tempfile.TemporaryDirectory(prefix="openenv-gym-harbor-jobs-") as jobs:
        command = [
            "docker", "run", "--rm", "--network", "host",
            "-v", f"{tasks.resolve()}:/tasks:ro", "-v", f"{jobs}:/jobs",
            # This tree's code, not the image's copy: the image is built once per machine.
            "-v", f"{PACKAGE_DIR}:/src/openenv_gym:ro", "-e", "PYTHONPATH=/src",
            image,
            "harbor", "run", "-p", "/tasks", "-a", agent, "-o", "/jobs", "-q", "-n", "1", "-y",
            "--env", "openenv_gym.interop.harbor.environment:OpenEnvGymEnvironment",
            "--ek", f"url={url}", "--ek", f"env_id={env_id}",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        results: dict[str, dict[str, float] | str] = {}
        for path in Path(jobs).glob("*/*/result.json"):
            trial = json.loads(path.read_text())
            name = str(trial.get("task_name") or path.parent.name.split("__")[0])
            verifier = trial.get("verifier_result") or {}
            exception = trial.get("exception_info")
            if verifier.get("rewards") is not None:
                results[name] = {k: float(v) for k, v in verifier["rewards"].items()}
            else:
                results[name] = str((exception or {}).get("exception_message") or "no reward")
        subprocess.run(["chmod", "-R", "a+rwX", jobs], check=False, capture_output=True)
        if not results:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise RuntimeError(
                f"harbor run -a {agent} wrote no trial result (exit {done.returncode}):\n{tail}"
            )
        return results
