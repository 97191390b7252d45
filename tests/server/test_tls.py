"""TLS: a server with a certificate serves wss://, and clients verify it."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import openenv_gym
from openenv_gym.errors import ConnectError
from openenv_gym.providers.local import READY_PREFIX


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_url(certificate: tuple[Path, Path]) -> Iterator[str]:
    cert, key = certificate
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openenv_gym",
            "serve",
            "CartPole-v1",
            "--port",
            "0",
            "--announce",
            "--certfile",
            str(cert),
            "--keyfile",
            str(key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith(READY_PREFIX), line
        yield line[len(READY_PREFIX) :].strip()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_tls_server_serves_wss_to_a_client_that_trusts_it(
    tls_url: str, certificate: tuple[Path, Path]
) -> None:
    assert tls_url.startswith("wss://127.0.0.1:")
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    with openenv_gym.RemoteEnv("CartPole-v1", url=tls_url, ssl_context=trusted) as env:
        obs, _ = env.reset(seed=0)
        for _ in range(50):
            obs, *_ = env.step(1)
        assert obs.shape == (4,)
    with openenv_gym.RemoteVectorEnv(
        "CartPole-v1", 4, urls=[tls_url, tls_url], ssl_context=trusted
    ) as envs:
        assert envs.reset(seed=0)[0].shape == (4, 4)


def test_tls_client_refuses_an_untrusted_certificate(tls_url: str) -> None:
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        openenv_gym.RemoteEnv("CartPole-v1", url=tls_url)
