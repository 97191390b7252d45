"""TLS: a server with a certificate serves wss://, and clients verify it."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import openenv_gym
from openenv_gym.errors import ConnectError
from openenv_gym.providers.local import READY_PREFIX


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with ``cryptography`` (a test extra)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


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
            "--set-attr-allow",
            "payload",
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


def test_tls_carries_replies_of_large_arrays_encrypted(
    tls_url: str, certificate: tuple[Path, Path]
) -> None:
    # A reply with a large array is written as parts (views of the array); over TLS they must
    # go through the encrypting transport, never straight to the socket.
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    big = np.random.default_rng(0).random((512, 512))  # 2 MB: gathered, over any socket buffer
    with openenv_gym.RemoteEnv("CartPole-v1", url=tls_url, ssl_context=trusted) as env:
        env.set_attr("payload", big)
        for _ in range(3):
            np.testing.assert_array_equal(env.get_attr("payload"), big)
        assert env.reset(seed=0)[0].shape == (4,)  # the connection is still in step


def test_tls_client_refuses_an_untrusted_certificate(tls_url: str) -> None:
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        openenv_gym.RemoteEnv("CartPole-v1", url=tls_url)
