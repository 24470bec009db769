"""The worker's endpoint: readiness follows the broker; HTTPS when given a certificate."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stream.http import Health, serve


def status(url: str, context: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_readiness_fails_without_the_group_coordinator() -> None:
    health = Health(stall_after_s=60)
    health.model_loaded, health.assigned_partitions = True, 3
    server = serve(CollectorRegistry(), health, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}"
        assert status(url + "/readyz") == 200
        health.broker_connected = False
        assert status(url + "/readyz") == 503
        assert status(url + "/healthz") == 200, "a broker outage is no reason to restart"
    finally:
        server.close()


def test_the_endpoint_serves_https_with_a_certificate(tmp_path: Path) -> None:
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate here: {made.stderr.decode()[:200]}")
    health = Health(stall_after_s=60)
    tls = (tmp_path / "cert.pem", tmp_path / "key.pem")
    server = serve(CollectorRegistry(), health, "127.0.0.1", 0, tls)
    try:
        trusted = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        assert status(f"https://127.0.0.1:{server.port}/healthz", trusted) == 200
        with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    finally:
        server.close()
