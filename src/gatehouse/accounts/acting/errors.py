"""Errors of a front-end acting for its users (docs/errors.md lists every code). A person who is named but not active
is answered with the usual account_disabled, account_pending or account_blocked, naming them."""

from __future__ import annotations

from gatehouse.errors import BadRequest, Forbidden


class ActingNotAllowed(Forbidden):
    """A key that does not act for users named a person (X-Gatehouse-User): send the request without the header, or
    ask an administrator to mark the key acts_for_users."""

    code = "acting_not_allowed"


class ActingUserMissing(BadRequest):
    """A front-end's key (acts_for_users) sent a request that names nobody: send the person's email in the
    X-Gatehouse-User header (or, as ACTS_FOR_USERS_SOURCES allows, OpenAI's `user` or Anthropic's
    `metadata.user_id`)."""

    code = "acting_user_missing"


class InvalidActingUser(BadRequest):
    """What names the person is not an email address: people are named by the email of their Gatehouse account."""

    code = "invalid_acting_user"


class ActingUserUnknown(Forbidden):
    """No Gatehouse account has the email a front-end named (and its domain is not one created on first sight): an
    administrator creates the account, or adds the domain to ACTS_FOR_USERS_CREATE_DOMAINS."""

    code = "acting_user_unknown"
