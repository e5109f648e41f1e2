"""One HTTP conversation (session.py): JSON values land exactly as the API sent them; TLS contexts are shared."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import httpx
import pytest

from crm_pipelines.connectors.session import render_value, tls_context
from crm_pipelines_sandbox.tls import loopback_certificate


def test_values_render_as_received() -> None:
    import json

    from crm_pipelines.connectors.session import decode_json

    record = decode_json(b'{"a": 1.50, "b": 7, "c": true, "d": false, "e": null, "f": "x", "g": {"k": [1]}}')
    assert [render_value(record[k]) for k in "abcdefg"] == [
        "1.50",
        "7",
        "true",
        "false",
        None,
        "x",
        '{"k":[1]}',
    ]
    assert json.dumps(record["a"]) == '"1.50"'  # kept as text, never rounded through float


def test_clients_share_one_tls_context_per_ca_file_and_still_verify(tmp_path: Path) -> None:
    cert = loopback_certificate(tmp_path / "server")
    other = loopback_certificate(tmp_path / "other")
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.socket = cert.server_context().wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    try:
        first, second = tls_context(str(cert.certificate)), tls_context(str(cert.certificate))
        assert first is second  # built once: loading a CA bundle costs more than a request
        assert tls_context(True) is tls_context(True)
        with httpx.Client(verify=first) as client:
            assert client.get(url).status_code in (200, 404)
        # A server whose certificate the bundle does not hold is refused.
        with (
            httpx.Client(verify=tls_context(str(other.certificate))) as client,
            pytest.raises(httpx.ConnectError),
        ):
            client.get(url)
        # A bundle replaced on disk is read again.
        os.utime(cert.certificate, ns=(0, 0))
        assert tls_context(str(cert.certificate)) is not first
    finally:
        server.shutdown()
        server.server_close()
