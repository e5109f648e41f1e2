"""One HTTP conversation with a declared system: credential, shared rate limit, retries, JSON as sent.

:class:`Session` sends a request with the current credential (renewing it once on a 401), through
the account's shared token bucket and the retry policy (:mod:`.limits`), and refuses to carry the
credential to another host. JSON answers are decoded with numbers kept as the text the API sent.
Both the extract side (:mod:`.engine`) and the write side (:mod:`.writes`) talk through it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from crm_pipelines.connectors.auth import AccessToken, Authenticator, ConnectionSettings, build_authenticator
from crm_pipelines.connectors.limits import (
    ApiRequestError,
    ErrorContext,
    RetrySpec,
    TokenBucket,
    raise_for_status,
    redact,
    send_request,
    shared_bucket,
)
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import MISSING

if TYPE_CHECKING:  # spec.py imports the write styles, which talk through a Session
    from crm_pipelines.connectors.spec import SystemSpec

__all__ = [
    "Session",
    "context_for",
    "decode_json",
    "dump_json",
    "http_client",
    "render_value",
]

log = logging.getLogger(__name__)

_USER_AGENT = "crm-pipelines"
# Requests of a GET whose 2xx body is not JSON before the read fails: a proxy that cuts answers
# short is transient; an API base URL that serves HTML is not, and should fail fast.
_BODY_ATTEMPTS = 3


class _JsonNumber(str):
    """A JSON number kept as the exact text the API sent (no float rounding, no ``1.0`` vs ``1``)."""

    __slots__ = ()


def decode_json(content: bytes) -> Any:
    return json.loads(content, parse_float=_JsonNumber, parse_int=_JsonNumber)


def render_value(value: Any) -> str | None:
    if value is None or value is MISSING:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str.__str__(value)
    return dump_json(value)


def dump_json(value: Any) -> str:
    """Compact JSON of a nested value, writing numbers with the text they arrived as."""
    if isinstance(value, _JsonNumber):
        return str.__str__(value)
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{dump_json(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(dump_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# --- HTTP session ----------------------------------------------------------------------------------


def context_for(system: SystemSpec, connection: ConnectionSettings, object_name: str | None) -> ErrorContext:
    return ErrorContext(
        system_name=system.name,
        system_title=system.title,
        object_name=object_name,
        base_url_variable=system.base_url_variable,
        credential_variables=tuple(c.variable for c in system.credential_variables()),
        secrets=connection.secret_values(),
        message_paths=tuple(system.error_body.message_paths),
        code_paths=tuple(system.error_body.code_paths),
    )


class Session:
    """One HTTP client, the account's shared bucket and the authenticator, for one extract or check."""

    def __init__(
        self,
        *,
        system: SystemSpec,
        connection: ConnectionSettings,
        context: ErrorContext,
        client: httpx.Client,
        retry: RetrySpec,
    ) -> None:
        self.system = system
        self.context = context
        self.client = client
        self.retry = retry
        self.bucket: TokenBucket = shared_bucket(
            base_url=connection.base_url, fingerprint=connection.fingerprint, rate_limit=system.rate_limit
        )
        self.auth: Authenticator = build_authenticator(system=system, connection=connection, context=context)
        # Requests sent, retries and token requests included: what the account's budget paid for.
        self.requests = 0

    def _send(
        self, build: Callable[[], httpx.Request], *, context: ErrorContext, token_request: bool = False
    ) -> httpx.Response:
        self.requests += 1
        return send_request(
            client=self.client,
            build=build,
            context=context,
            bucket=self.bucket,
            retry=self.retry,
            rate_limit=self.system.rate_limit,
            token_request=token_request,
        )

    def token(self) -> AccessToken:
        return self.auth.token(send=lambda build: self._send(build, context=self.context, token_request=True))

    def relative(self, url: str) -> str:
        """``url`` without the API's origin, to keep (a delta link) and follow after the API moved.

        Relative links resolve against the API base of the run that follows them, so a kept link
        survives a new host or port for the same organisation; a link elsewhere is kept as it is
        (and refused when followed).
        """
        target, origin = httpx.URL(url), httpx.URL(self.token().api_base_url)
        if not target.is_absolute_url or (target.scheme, target.host, target.port) != (
            origin.scheme,
            origin.host,
            origin.port,
        ):
            return url
        return str(target.copy_with(scheme=None, host=None, port=None))

    @staticmethod
    def _absolute(url: str, api_base: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        base = httpx.URL(api_base)
        prefix = base.path.rstrip("/")
        if prefix and not url.startswith(prefix + "/"):
            return api_base.rstrip("/") + url
        return str(base.copy_with(path="/", query=None, fragment=None)).rstrip("/") + url

    def send(
        self,
        method: str,
        page: PageRequest,
        *,
        context: ErrorContext,
        json_body: Any = None,
        accept: str = "application/json",
        content: bytes | None = None,
        content_type: str | None = None,
        raise_errors: bool = True,
    ) -> httpx.Response:
        """Send with the current credential; on a 401 renew it once and try again.

        Args:
            method: HTTP method.
            page: URL (absolute or relative to the API base), parameters and headers.
            context: Names the system and object in errors.
            json_body: A body sent as JSON.
            accept: The Accept header.
            content: A raw body (with ``content_type``), e.g. a multipart ``$batch``.
            content_type: Content type of ``content``.
            raise_errors: False returns 4xx answers instead of raising (per-record writes read them).

        Returns:
            A 2xx response (207 included: batch endpoints report per-record errors with it).
        """
        if json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            content_type = "application/json"
        for attempt in range(2):
            token = self.token()
            url = self._absolute(page.url, token.api_base_url)
            api_origin = httpx.URL(token.api_base_url)
            target = httpx.URL(url)
            if (target.scheme, target.host, target.port) != (
                api_origin.scheme,
                api_origin.host,
                api_origin.port,
            ):
                # A next-page link to another host would carry our credential there.
                raise ApiRequestError(
                    f"{context.where}: refusing to follow a link to {target.scheme}://{target.host} "
                    f"(the API is at {api_origin.scheme}://{api_origin.host}).",
                    fix=f"check the paging declaration in {context.yaml_path}.",
                )
            headers = {
                **page.headers,
                "Accept": accept,
                **{name: value.reveal() for name, value in token.headers.items()},
            }
            if content is not None and content_type is not None:
                headers["Content-Type"] = content_type
            params = {**page.params, **{name: value.reveal() for name, value in token.params.items()}} or None

            def build(
                url: str = url, headers: dict[str, str] = headers, params: dict[str, str] | None = params
            ) -> httpx.Request:
                return httpx.Request(method, url, params=params, headers=headers, content=content)

            response = self._send(build, context=context)
            if response.status_code == 401 and self.auth.refreshable and attempt == 0:
                log.info("%s: credential rejected (401); renewing it and retrying once", context.where)
                response.read()
                self.auth.invalidate(token=token)
                continue
            if response.status_code in self.system.empty_statuses:
                return response  # e.g. 304 Not Modified: nothing changed since If-Modified-Since
            if raise_errors or response.status_code in (401, 403):
                raise_for_status(response=response, context=context)
            return response
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def decode(self, response: httpx.Response, *, context: ErrorContext) -> Any:
        if response.status_code in self.system.empty_statuses or (
            response.status_code == 204 and not response.content
        ):
            return {}
        try:
            return decode_json(response.content)
        except (ValueError, UnicodeDecodeError):
            raise ApiRequestError(
                redact(
                    f"{context.where}: {response.request.url.path} answered HTTP {response.status_code} with "
                    f"a body that is not JSON ({response.headers.get('content-type', 'no content type')}).",
                    context.secrets,
                ),
                fix=f"check {context.base_url_variable}: it must point at the {self.system.title} API.",
                status=response.status_code,
            ) from None

    def get_json(self, page: PageRequest, *, context: ErrorContext) -> Any:
        """GET a page as JSON with the current token (401: refresh once and retry).

        A 2xx answer whose body is not JSON (cut short by a proxy, or empty) is asked for again,
        up to ``_BODY_ATTEMPTS`` times with the retry policy's backoff: a GET can be repeated.
        """
        for attempt in range(1, _BODY_ATTEMPTS + 1):
            response = self.send("GET", page, context=context)
            try:
                return self.decode(response, context=context)
            except ApiRequestError:
                if attempt == _BODY_ATTEMPTS:
                    raise
                delay = random.uniform(
                    0,
                    min(
                        self.retry.backoff_max_seconds,
                        self.retry.backoff_initial_seconds * 2 ** (attempt - 1),
                    ),
                )
                log.warning(
                    "%s: HTTP %d with a body that is not JSON (%d bytes); asking again in %.1f s",
                    context.where,
                    response.status_code,
                    len(response.content),
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def post_json(self, page: PageRequest, body: Any, *, context: ErrorContext, method: str = "POST") -> Any:
        """POST (or PATCH) a JSON body and decode the JSON answer."""
        return self.decode(self.send(method, page, context=context, json_body=body), context=context)


def http_client(*, connection: ConnectionSettings, retry: RetrySpec) -> httpx.Client:
    timeout = connection.timeout_seconds or retry.timeout_seconds
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        verify=tls_context(connection.verify),  # verification stays on unless a CA bundle is given
        follow_redirects=False,  # a redirect would re-send the bearer token elsewhere
        headers={"User-Agent": _USER_AGENT},
    )


def tls_context(verify: bool | str) -> ssl.SSLContext | bool:
    """What a client verifies certificates with: the system CAs (``True``) or a CA bundle path.

    Building a context loads the whole CA bundle, about 15 ms of CPU, and a night opens a client per
    extract and per sync; so one context per CA source (and, for a path, its modification time) is
    built per process and shared, as ``ssl.SSLContext`` allows.
    """
    if verify is False:
        return False
    if verify is True:
        return _context(None, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"), 0)
    return _context(verify, None, None, os.stat(verify).st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _context(path: str | None, cert_file: str | None, cert_dir: str | None, stamp: int) -> ssl.SSLContext:
    """The context for a CA source; the environment's CA variables and the file's stamp key the cache."""
    if path is None:
        return httpx.create_ssl_context(verify=True)  # certifi, or SSL_CERT_FILE / SSL_CERT_DIR
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    return ssl.create_default_context(cafile=path)
