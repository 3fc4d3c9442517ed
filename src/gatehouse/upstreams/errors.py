"""Upstream provisioning errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import BadRequest, Conflict, NotFound


class UpstreamNotFound(NotFound):
    """No upstream with this id (GET /admin/upstreams lists them)."""

    code = "not_found"


class InvalidUpstream(BadRequest):
    """An upstream setting is invalid (`param` names it): an unknown kind, a bad URL, a bad timeout..."""

    code = "invalid_upstream"


class UpstreamNameTaken(BadRequest):
    """Another upstream has this name."""

    code = "upstream_name_taken"


class UpstreamCheckFailed(BadRequest):
    """The URL did not answer as a server of that kind: fix it, or pass `skip_check: true` to save it anyway."""

    code = "upstream_check_failed"


class UpstreamManagedByConfig(Conflict):
    """The upstream comes from GATEHOUSE_CONFIG or the env shortcuts: change it there and run `gatehouse reload`
    (overrides work)."""

    code = "upstream_managed_by_config"
