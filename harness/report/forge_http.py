"""A small JSON-over-HTTPS client for the PR bot, on the standard library's urllib.

Why not requests/PyGithub/python-gitlab: one code path for GitHub and GitLab, no extra
dependency on GPU runners that have no package index, and full control over the two
things a bot must get right: tokens never leave the request headers (every error text is
redacted before anyone sees it) and retries are bounded (429/5xx, Retry-After honoured).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

USER_AGENT = "decode-attn-harness-bot/1"
MASK = "***"
_NOT_JSON = object()
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (and its URL-encoded form) replaced by ***."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, urllib.parse.quote(secret, safe=""), json.dumps(secret)[1:-1]}:
            text = text.replace(form, MASK)
    return text


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: `attempts` tries in all, waits base*2**k capped at
    `max_wait_s`; a server's Retry-After wins but is capped the same way."""

    attempts: int = 5
    base_s: float = 1.0
    max_wait_s: float = 30.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait_s)
        return min(self.base_s * 2**attempt, self.max_wait_s)


class ApiError(Exception):
    """One line, already redacted, that says what the forge answered (or that it could
    not be reached). `status` is None when no HTTP answer came."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    data: Any


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds (delta or HTTP date), or GitHub's x-ratelimit-reset."""
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return when.timestamp() - time.time()
    if (
        headers.get("x-ratelimit-remaining") == "0"
        and headers.get("x-ratelimit-reset", "").isdigit()
    ):
        return float(headers["x-ratelimit-reset"]) - time.time()
    return None


def _is_rate_limited(status: int, headers: Mapping[str, str]) -> bool:
    """429, or GitHub's 403 for a (secondary) rate limit, which carries these headers."""
    if status == 429:
        return True
    return status == 403 and (
        "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"
    )


def _server_message(raw: bytes) -> str:
    """The forge's own explanation from an error body, shortened to one line."""
    text = raw.decode("utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        parts = [str(obj[k]) for k in ("message", "error", "error_description") if obj.get(k)]
        if parts:
            text = "; ".join(parts)
    text = " ".join(text.split())
    return text[:200] + ("…" if len(text) > 200 else "")


@dataclass
class Http:
    """JSON requests against one API root (`base_url`), authenticated by `headers`.

    Only URLs under `base_url`'s scheme and host are ever requested, so a pagination
    link can never carry the token elsewhere."""

    base_url: str
    headers: Mapping[str, str]
    secrets: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = lambda _msg: None

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = self.base_url.rstrip("/") + path
        return url + ("?" + urllib.parse.urlencode(query) if query else "")

    def _same_origin(self, url: str) -> bool:
        a, b = urllib.parse.urlsplit(self.base_url), urllib.parse.urlsplit(url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    def request(self, method: str, url: str, body: Any = None, *, retries: bool = True) -> Response:
        """One JSON request with bounded retries on 429/5xx/unreachable; raises ApiError
        (redacted) on anything else or when the tries are used up."""
        if not self._same_origin(url):
            raise ApiError(f"refusing to send the token to {url!r}: not under {self.base_url}")
        attempts = self.retry.attempts if retries else 1
        last: ApiError | None = None
        for attempt in range(attempts):
            try:
                return self._once(method, url, body)
            except _Retryable as exc:
                last = ApiError(exc.message, exc.status, retryable=True)
                if attempt + 1 >= attempts:
                    break
                wait = self.retry.wait(attempt, exc.retry_after)
                self.log(f"{exc.message}; retry {attempt + 1}/{attempts - 1} in {wait:.1f} s")
                self.sleep(wait)
        assert last is not None
        if attempts > 1:
            last = ApiError(f"{last} (gave up after {attempts} tries)", last.status, True)
        raise last

    def _once(self, method: str, url: str, body: Any) -> Response:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        where = f"{method} {redact(urllib.parse.urlsplit(url).path, self.secrets)}"
        failure: Exception | None = None
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
                status, hdrs = resp.status, {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as exc:
            hdrs = {k.lower(): v for k, v in (exc.headers or {}).items()}
            raw = exc.read() if exc.fp is not None else b""
            msg = redact(f"{where}: HTTP {exc.code} {_server_message(raw)}", self.secrets)
            if exc.code >= 500 or _is_rate_limited(exc.code, hdrs):
                failure = _Retryable(msg, exc.code, _retry_after(hdrs))
            else:
                failure = ApiError(msg, exc.code)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            failure = _Retryable(redact(f"{where}: unreachable ({reason})", self.secrets))
        if failure is not None:
            # Raised here, outside the except block: no chained urllib error (which holds
            # the raw answer, maybe echoing the token) rides along with ours.
            raise failure
        try:
            parsed = json.loads(raw) if raw.strip() else None
        except ValueError:
            parsed = _NOT_JSON
        if parsed is _NOT_JSON:
            raise ApiError(f"{where}: HTTP {status} but the answer is not JSON")
        return Response(status, hdrs, parsed)

    def paginate(self, url: str, max_pages: int = 200) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, following `Link: rel="next"` (GitHub, GitLab)
        or GitLab's X-Next-Page."""
        for _ in range(max_pages):
            resp = self.request("GET", url)
            if not isinstance(resp.data, list):
                raise ApiError(f"GET {urllib.parse.urlsplit(url).path}: expected a list")
            yield from (item for item in resp.data if isinstance(item, dict))
            nxt = _LINK_NEXT.search(resp.headers.get("link", ""))
            if nxt:
                url = nxt.group(1)
            elif resp.headers.get("x-next-page", "").strip().isdigit():
                url = _with_page(url, resp.headers["x-next-page"].strip())
            else:
                return
        raise ApiError(f"more than {max_pages} pages of comments; giving up")


def _with_page(url: str, page: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["page"] = page
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the same scheme and host: urllib would otherwise copy
    the token header to wherever the redirect points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        a, b = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (a.scheme, a.netloc) != (b.scheme, b.netloc):
            return None  # urllib then raises HTTPError for the 3xx: reported, not followed
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
