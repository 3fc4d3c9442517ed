"""The alert webhook: one signed POST per attempt, and the backoff between attempts.

What a receiver gets (RUNBOOK "Budget alerts" shows how to verify it):

- the body: JSON, `Content-Type: application/json`, the same bytes on every attempt of one alert;
- `X-Gatehouse-Timestamp`: the attempt's time, in whole Unix seconds;
- `X-Gatehouse-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with ALERT_WEBHOOK_SECRET, of the timestamp,
  a `.`, and the body exactly as received (`f"{timestamp}.".encode() + body`), as Stripe signs its webhooks: a
  receiver compares in constant time, and refuses old timestamps so a recorded request cannot be replayed later;
- `X-Gatehouse-Event`: the event's type (`budget.threshold`, or `alert.test`).

An attempt succeeds on any 2xx answer; anything else (another status, a redirect, which is not followed, no
connection within ALERT_WEBHOOK_TIMEOUT_SECONDS, no answer within as long again) fails it. The URL and the secret
never reach a log line, an error or the database: only the URL's scheme and host (`target`) do, since a webhook
URL's path often is itself a secret (a chat tool's incoming-webhook URL).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from gatehouse import __version__
from gatehouse.settings import Settings

SIGNATURE_HEADER = "X-Gatehouse-Signature"
TIMESTAMP_HEADER = "X-Gatehouse-Timestamp"
EVENT_HEADER = "X-Gatehouse-Event"
JITTER = 0.2  # each wait is up to this share longer, so that many alerts retrying together spread out
ANSWER_EXCERPT = 200  # characters of a refusing receiver's answer kept in the delivery's last error


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-Gatehouse-Signature value of a body sent at `timestamp`."""
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def target_of(url: str) -> str:
    """What may be shown of a webhook URL: its scheme and host (and port), never its path, query or credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
    return f"{parts.scheme}://{host}{port}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt: delivered (a 2xx answer) or not, the answer's status, and what went wrong."""

    delivered: bool
    status: int | None
    error: str | None
    seconds: float


class Webhook:
    """Posts signed events to ALERT_WEBHOOK_URL; one connection pool for the process."""

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        timeout_seconds: float,
        max_attempts: int,
        backoff_seconds: float,
        max_seconds: float,
    ) -> None:
        self._url = url
        self._secret = secret.encode()
        self.target = target_of(url)
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_seconds = max_seconds
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Webhook | None:
        """The webhook of these settings; None when ALERT_WEBHOOK_URL is not set."""
        url = settings.alert_webhook_url.get_secret_value()
        if not url:
            return None
        return cls(
            url=url,
            secret=settings.alert_webhook_secret.get_secret_value(),
            timeout_seconds=settings.alert_webhook_timeout_seconds,
            max_attempts=settings.alert_webhook_max_attempts,
            backoff_seconds=settings.alert_webhook_backoff_seconds,
            max_seconds=settings.alert_webhook_max_seconds,
        )

    def __repr__(self) -> str:
        return f"Webhook({self.target})"

    @property
    def attempt_seconds(self) -> float:
        """The longest one attempt takes: a connection, then an answer, each within the timeout."""
        return 2 * self.timeout_seconds

    def wait_after(self, attempts: int) -> float:
        """How long to wait after the `attempts`-th failed attempt: BACKOFF_SECONDS, doubled for each attempt
        before it, plus up to a fifth more at random."""
        return float(self.backoff_seconds * 2 ** (attempts - 1) * (1 + JITTER * random.random()))

    async def start(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self.timeout_seconds,
                sock_connect=self.timeout_seconds,
                sock_read=self.timeout_seconds,
            )
            self._session = aiohttp.ClientSession(timeout=timeout, headers={"user-agent": f"Gatehouse/{__version__}"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, body: bytes, *, event: str) -> Outcome:
        """One attempt: POST the body, signed now. Never raises for the receiver's sake: its failure is the
        outcome."""
        await self.start()
        session = self._session
        if session is None:  # closed meanwhile: the process is stopping
            return Outcome(False, None, "not sent: Gatehouse is stopping", 0.0)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            EVENT_HEADER: event,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        started = time.monotonic()
        try:
            async with session.post(self._url, data=body, headers=headers, allow_redirects=False) as answer:
                excerpt = "" if 200 <= answer.status < 300 else await _excerpt(answer)
                status = answer.status
        except Exception as exc:  # a cancellation is no Exception: it goes through
            return Outcome(False, None, self._describe(exc), time.monotonic() - started)
        seconds = time.monotonic() - started
        if 200 <= status < 300:
            return Outcome(True, status, None, seconds)
        refused = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        return Outcome(False, status, f"{refused}: {excerpt}" if excerpt else refused, seconds)

    def _describe(self, exc: Exception) -> str:
        """An attempt's failure, with the URL (which may hold a secret) reduced to its target."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return f"no connection within {self.timeout_seconds:g} s"
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.timeout_seconds:g} s"
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return text.replace(self._url, self.target)[:300]


async def _excerpt(answer: aiohttp.ClientResponse) -> str:
    """The start of a refusal's body, on one line (receivers often say there why they refused)."""
    try:
        raw = await answer.content.read(ANSWER_EXCERPT * 4)
    except Exception:
        return ""
    text = raw.decode("utf-8", errors="replace")
    return " ".join(text.split())[:ANSWER_EXCERPT]
