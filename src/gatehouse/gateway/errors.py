"""Gateway errors: what a client of /v1 or /api is answered when its request, its model or an upstream fails
(docs/errors.md lists every code). Each surface renders them in its own protocol's shape."""

from __future__ import annotations

from gatehouse.errors import BadRequest, GatehouseError, NotFound, TooManyRequests, Unavailable, UpstreamError

# Recorded in the request log (status 499) for a client that went away mid-answer; no client receives it.
CLIENT_DISCONNECTED = "client_disconnected"


class ModelNotFound(NotFound):
    """No upstream serves this model (GET /v1/models or /api/tags lists them), or the upstream said it has none."""

    code = "model_not_found"


class NoUsableUpstream(Unavailable):
    """Every upstream serving the model is down, draining or overridden: retry after Retry-After, or ask an
    operator."""

    code = "no_usable_upstream"


class UnreachableUpstream(UpstreamError):
    """No connection to the upstream (refused, reset, DNS): tried the next one first, when there is one."""

    code = "upstream_unreachable"


class UpstreamAuthFailed(UpstreamError):
    """The upstream refused Gatehouse's credentials (401/403): an operator must fix its api_key."""

    code = "upstream_auth_failed"


class UpstreamRateLimited(TooManyRequests):
    """The upstream itself is rate limiting (its Retry-After is passed on)."""

    code = "upstream_rate_limited"


class UpstreamBadRequest(BadRequest):
    """The upstream rejected the request (a 4xx of its own, its message included)."""

    code = "upstream_bad_request"


class UpstreamFailed(UpstreamError):
    """The upstream answered with a 5xx (tried the next one first, when there is one)."""

    code = "upstream_error"


class UpstreamDisconnected(UpstreamError):
    """The upstream broke off its answer."""

    code = "upstream_disconnected"


class UpstreamBadResponse(UpstreamError):
    """The upstream's answer was not what its protocol promises (not JSON, a malformed stream)."""

    code = "upstream_bad_response"


class InvalidJson(BadRequest):
    """The request body is empty, not JSON, or not a JSON object."""

    code = "invalid_json"


class MissingField(BadRequest):
    """A required field is missing (`param` names it: `model`, `messages`, `input`)."""

    code = "missing_field"


class InvalidField(BadRequest):
    """A field has the wrong type or value (`param` names it)."""

    code = "invalid_field"


class InvalidMessage(BadRequest):
    """A chat message is malformed (`param` names it, e.g. `messages.2.content.0`)."""

    code = "invalid_message"


class UnsupportedForUpstream(BadRequest):
    """The request uses something the chosen upstream's protocol cannot express (the message says what)."""

    code = "unsupported_for_upstream"


class RelayFailed(UpstreamError):
    """Gatehouse failed while relaying the answer (a bug: the request id finds it in the log)."""

    status = 500
    code = "relay_failed"


class Terminated(GatehouseError):
    """An operator ended the request (POST /admin/streams/{id}/terminate); usage is settled as for any ending."""

    status = 410
    type = "server_error"
    code = "terminated_by_operator"

    def __init__(self, reason: str) -> None:
        super().__init__(f"This request was ended by an operator: {reason}")


class ShutdownDeadline(Terminated):
    """The replica was shutting down (a restart, a rolling upgrade) and the request was still running at the end of
    SHUTDOWN_DEADLINE_SECONDS: what was streamed is counted; send the request again (another replica takes it)."""

    status = 503
    code = "shutdown_deadline"

    def __init__(self, reason: str) -> None:
        GatehouseError.__init__(
            self, f"This replica is shutting down and ended the request at its deadline ({reason}): send it again."
        )


class StreamNotFound(NotFound):
    """No live stream with this id: it may have ended (GET /admin/streams lists them)."""

    code = "stream_not_found"


class StreamsUnavailable(Unavailable):
    """The stream is not on this replica, and while Redis is unreachable the other replicas' streams can be neither
    listed nor reached: retry once Redis is back (Retry-After), or send the request to the replica holding it."""

    code = "streams_unavailable"
