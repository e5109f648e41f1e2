"""Redaction: no credential an error message quotes reaches an alert or a log line."""

from __future__ import annotations

import pytest

from crm_pipelines.alerts.redact import MAX_ERROR_LINE, first_error_line, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("could not connect to postgresql://loader:s3cr3t-pw@db.internal:5432/crm", "s3cr3t-pw"),
        ("GET https://ghp_abcdef123456@github.com/org/repo failed", "ghp_abcdef123456"),
        ("login failed: password=hunter2hunter2 user=sync", "hunter2hunter2"),
        ("refresh failed token=eyJhbGciOiJIUzI1NiJ9.payload.sig; retrying", "eyJhbGciOiJIUzI1NiJ9"),
        ("bad client: secret=topsecretvalue&grant_type=client_credentials", "topsecretvalue"),
        ('{"client_secret": "abc123def456", "client_id": "sync"}', "abc123def456"),
        ("401 with api_key: k-0987654321 for request", "k-0987654321"),
        ("request headers: Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("upstream said: invalid Bearer abc.def-ghi_jkl for this scope", "abc.def-ghi_jkl"),
    ],
)
def test_credentials_in_error_text_are_masked(text: str, secret: str) -> None:
    redacted = redact(text, environ={})
    assert secret not in redacted
    assert "***" in redacted


def test_what_is_not_a_secret_is_kept() -> None:
    text = "extract raw/hubspot failed at https://api.hubapi.com/crm/v3/objects/contacts (HTTP 502)"
    assert redact(text, environ={}) == text
    assert redact("user=sync", environ={}) == "user=sync"
    assert (
        redact("failed (token=abcdef123) [secret=xyz987654]", environ={}) == "failed (token=***) [secret=***]"
    )


def test_the_values_of_secret_environment_variables_are_masked() -> None:
    environ = {
        "ALERT_SMTP_PASSWORD": "smtp-pass-123",
        "HUBSPOT_ACCESS_TOKEN": "pat-na1-xyz789",
        "CRM_PIPELINES_MASKING_KEY": "maskkey0001",
        "SALESFORCE_CLIENT_SECRET": "sf-secret-42",
        "SHORT_TOKEN": "abc",  # shorter than 6: would mask ordinary words
        "SFTP_HOST": "sftp.example.com",  # not a secret's name
    }
    text = "smtp-pass-123 pat-na1-xyz789 maskkey0001 sf-secret-42 abc sftp.example.com"
    assert redact(text, environ=environ) == "*** *** *** *** abc sftp.example.com"


def test_extra_secrets_of_a_channel_are_masked() -> None:
    url = "https://hooks.slack.com/services/T1/B2/c3"
    assert url not in redact(f"could not post to {url}", environ={}, secrets=[url])


def test_the_first_error_line_is_the_first_non_empty_line_redacted_and_capped() -> None:
    message = (
        "\n\n  RuntimeError: could not log in with password=p4ssw0rd!  \nTraceback (most recent call last):\n"
    )
    assert first_error_line(message, environ={}) == "RuntimeError: could not log in with password=***"
    assert first_error_line("", environ={}) is None
    assert first_error_line(None, environ={}) is None
    assert first_error_line("\n \n", environ={}) is None
    long = first_error_line("x" * 1000, environ={})
    assert long is not None
    assert len(long) == MAX_ERROR_LINE
    assert long.endswith("…")


def test_a_secret_is_masked_before_the_line_is_cut() -> None:
    secret = "averylongsecretvalue"
    line = first_error_line("x" * (MAX_ERROR_LINE - 10) + secret, environ={"WAREHOUSE_PASSWORD": secret})
    assert line is not None
    assert secret[:9] not in line
