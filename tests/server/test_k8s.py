"""The Kubernetes recipe (server/k8s/): schema-valid, consistent, and its server really runs.

No cluster can run here, so the manifests are checked against Kubernetes' own OpenAPI schemas
(``kubernetes-validate``, offline, strict: unknown fields fail), against each other (labels,
ports, Secret key), against the library's constants, and by starting the server with the
Deployment's arguments and token variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from openenv_gym.testing.optional import require_module

kubernetes_validate = require_module(
    "kubernetes_validate", family="k8s", install="pip install kubernetes-validate"
)
yaml = require_module("yaml", family="k8s", install="pip install pyyaml")

from openenv_gym.errors import AuthenticationError
from openenv_gym.providers.docker import CONTAINER_PORT, SANDBOX_CAPS
from openenv_gym.providers.local import READY_PREFIX
from openenv_gym.server.app import HEALTH_PATH
from openenv_gym.ws.handshake import probe

K8S = Path(__file__).resolve().parents[2] / "server" / "k8s"
KUBERNETES_VERSION = "1.33.0"


def _load(name: str) -> dict[str, Any]:
    (document,) = list(yaml.safe_load_all((K8S / name).read_text()))
    assert isinstance(document, dict)
    return document


def _container() -> dict[str, Any]:
    (container,) = _load("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "secret.yaml"])
def test_k8s_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    kubernetes_validate.validate(_load(name), KUBERNETES_VERSION, strict=True)


def test_k8s_manifests_agree_with_each_other_and_the_library() -> None:
    deployment, service, secret = (_load(f"{n}.yaml") for n in ("deployment", "service", "secret"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["clusterIP"] == "None"  # headless: DNS lists every server
    container = _container()
    (port,) = container["ports"]
    assert port["containerPort"] == CONTAINER_PORT
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    (token_var,) = container["env"]
    assert token_var["name"] == "OPENENV_GYM_TOKEN"
    ref = token_var["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert sorted(container["securityContext"]["capabilities"]["add"]) == sorted(SANDBOX_CAPS)


def test_k8s_deployment_arguments_serve_with_the_secret_token() -> None:
    # The image's entrypoint is `openenv-gym serve --host 0.0.0.0 --port 8765`: run that with
    # the Deployment's args and token variable, on loopback and a free port.
    token = _load("secret.yaml")["stringData"]["token"]
    env = {**os.environ, "OPENENV_GYM_TOKEN": token}
    command = [sys.executable, "-m", "openenv_gym", "serve", "--host", "127.0.0.1"]
    command += ["--port", "0", "--announce", *_container()["args"]]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline().decode()
            assert line, "the server exited before it announced its address"
            if line.startswith(READY_PREFIX):
                url = line[len(READY_PREFIX) :].strip()
        assert url is not None
        assert probe(url, timeout=10.0, token=token)
        with pytest.raises(AuthenticationError):
            probe(url, timeout=10.0)
        health = url.replace("ws://", "http://") + HEALTH_PATH
        with urllib.request.urlopen(health, timeout=10.0) as reply:
            assert reply.status == 200
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
