"""Account errors: users, keys, sessions, invites and groups (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized


class EmailTaken(Conflict):
    """A user with this email exists already (emails are unique, whatever their case)."""

    code = "email_taken"


class WeakPassword(BadRequest):
    """The password is too short (8+ characters) or too long (1,024 at most)."""

    code = "weak_password"


class RoleNotAllowed(Forbidden):
    """Only a superadmin acts on a superadmin; a monitor blocks only users ranked below them."""

    code = "role_not_allowed"


class LastSuperadmin(Forbidden):
    """The change would leave no active superadmin: make another superadmin first."""

    code = "last_superadmin"


class SelfRoleChange(Forbidden):
    """Nobody changes their own role: ask another administrator."""

    code = "self_role_change"


class SelfDisable(Forbidden):
    """Nobody changes their own status: ask another administrator."""

    code = "self_disable"


class SelfBlock(Forbidden):
    """Nobody blocks themselves."""

    code = "self_block"


class SelfDelete(Forbidden):
    """Nobody deletes their own account: ask another administrator."""

    code = "self_delete"


class WrongPassword(BadRequest):
    """A password change named the wrong current password."""

    code = "wrong_password"


class InvalidCredentials(Unauthorized):
    """Wrong email or password (the answer is the same whether or not the email has an account)."""

    code = "invalid_credentials"


class LoginLocked(TooManyRequests):
    """Too many failed logins for the account or the address: wait Retry-After seconds, or ask an administrator."""

    code = "login_locked"


class InvalidExpiry(BadRequest):
    """An expiry that is past, or too far ahead (keys: 100 years; invites: a year)."""

    code = "invalid_expiry"


class KeyNotFound(NotFound):
    """No API key with this id (or not one of the caller's)."""

    code = "key_not_found"


class InviteNotFound(NotFound):
    """No invite with this id."""

    code = "invite_not_found"


class InviteInvalid(BadRequest):
    """The invite token is not one Gatehouse issued: check the link, or ask for a new invite."""

    code = "invite_invalid"


class InviteRevoked(BadRequest):
    """The invite was revoked: ask an administrator for a new one."""

    code = "invite_revoked"


class InviteUsedUp(BadRequest):
    """The invite created as many accounts as it allowed: ask an administrator for a new one."""

    code = "invite_used_up"


class InviteExpired(BadRequest):
    """The invite expired: ask an administrator for a new one."""

    code = "invite_expired"


class InviteEmailMismatch(BadRequest):
    """The invite is bound to another email address: sign up with the address it was sent to."""

    code = "invite_email_mismatch"


class InviteRequired(BadRequest):
    """SIGNUP_MODE=invite: sign-up needs an invite."""

    code = "invite_required"


class SignupClosed(Forbidden):
    """SIGNUP_MODE=closed: nobody signs up; administrators create accounts."""

    code = "signup_closed"


class KeySettingNotAllowed(Forbidden):
    """The caller may not set this on a key: only an administrator marks a key `acts_for_users` or changes the group
    of an existing key, and a user may only narrow the restrictions of their own keys (`param` names the field)."""

    code = "key_setting_not_allowed"


class GroupNotFound(NotFound):
    """No group with this id."""

    code = "group_not_found"


class GroupExists(Conflict):
    """A group with this name exists already (names are unique, whatever their case): choose another name."""

    code = "group_exists"


class GroupInUse(Conflict):
    """Keys are bound to the group (or to the member's place in it): rebind them to another group, unbind or
    revoke them first; the message names them."""

    code = "group_in_use"


class MembershipNotFound(NotFound):
    """The user is not a member of this group."""

    code = "membership_not_found"


class NotGroupMember(Conflict):
    """A key may be bound only to a group its owner belongs to: add the owner to the group first, or choose another
    group."""

    code = "not_group_member"


class KeyInUse(Conflict):
    """A request tried to revoke the API key it is made with (a lockout of the caller itself): use another key or
    the console."""

    code = "key_in_use"
