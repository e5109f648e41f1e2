"""The signatures, computed here from each vendor's documented formula, not from the module's signers."""

from __future__ import annotations

import base64
import hashlib
import hmac

from crm_pipelines.webhooks.senders import sign_hubspot_v3, sign_standard, sign_zendesk


def _b64_hmac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def test_hubspot_v3_signs_method_uri_body_and_timestamp() -> None:
    body = b'[{"eventId":1}]'
    expected = _b64_hmac(
        b"secret", b"POSThttps://hooks.example.com/webhooks/hubspot" + body + b"1764979200000"
    )
    assert (
        sign_hubspot_v3("secret", "POST", "https://hooks.example.com/webhooks/hubspot", body, 1764979200000)
        == expected
    )


def test_zendesk_signs_timestamp_then_body() -> None:
    expected = _b64_hmac(b"signing", b"2026-12-06T10:00:00Z" + b'{"id":"e"}')
    assert sign_zendesk("signing", "2026-12-06T10:00:00Z", b'{"id":"e"}') == expected


def test_standard_webhooks_sign_id_timestamp_body_with_the_decoded_secret() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = "v1," + _b64_hmac(key, b"msg_1.1764979200.{}")
    assert sign_standard(secret, "msg_1", 1764979200, b"{}") == expected
