"""Model access errors: a model, a surface or a network the caller may not use; access rules not found or invalid
(docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import BadRequest, Forbidden, NotFound


class ModelNotAllowed(Forbidden):
    """The caller may not use this model (an access rule, the default policy, or the key's own model list)."""

    code = "model_not_allowed"


class SurfaceNotAllowed(Forbidden):
    """This API key is limited to other client surfaces (its `allowed_surfaces`)."""

    code = "surface_not_allowed"


class NetworkNotAllowed(Forbidden):
    """This API key may only be used from its `allowed_networks`, and the request came from elsewhere."""

    code = "network_not_allowed"


class RuleNotFound(NotFound):
    """No access rule with this id."""

    code = "rule_not_found"


class InvalidRule(BadRequest):
    """An access rule's subject, effect, target or pattern is not valid (the message says which and why)."""

    code = "invalid_rule"
