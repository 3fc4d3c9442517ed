"""Authentication and access errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import Forbidden, NotFound, Unauthorized


class InvalidApiKey(Unauthorized):
    """The API key does not exist or was revoked: check it, or create a new one."""

    code = "invalid_api_key"


class ExpiredApiKey(Unauthorized):
    """The API key passed its expiry: create a new one."""

    code = "expired_api_key"


class MissingApiKey(Unauthorized):
    """No credentials: send `Authorization: Bearer <key>` (or log in to the console)."""

    code = "missing_api_key"


class SessionExpired(Unauthorized):
    """The console session ended or never existed: log in again."""

    code = "session_expired"


class CsrfFailed(Forbidden):
    """A change made with the session cookie lacks the right X-CSRF-Token header (the value returned at login)."""

    code = "csrf_failed"


class AccountDisabled(Forbidden):
    """The account is disabled: an administrator can enable it."""

    code = "account_disabled"


class AccountPending(Forbidden):
    """The account waits for an administrator's approval."""

    code = "account_pending"


class AccountBlocked(Forbidden):
    """The account is blocked (for good, or until the time the message gives): ask an administrator."""

    code = "account_blocked"


class RoleTooLow(Forbidden):
    """The route needs a higher role than the caller's (user < monitor < admin < superadmin)."""

    code = "forbidden"


class TokenNotConfigured(Unauthorized):
    """A token header (X-Job-Token) was sent, but the server has no such token set: set it, or use an admin key."""

    code = "token_not_configured"


class InvalidToken(Unauthorized):
    """The token header (X-Job-Token) does not match the server's setting (JOB_TOKEN)."""

    code = "invalid_token"


class UserNotFound(NotFound):
    """No user has this id or email."""

    code = "user_not_found"
