"""Who may use what, applied to a gateway request: the key's own restrictions (client surfaces, client networks)
when the request arrives, and the model access rules (accounts/access/policy.py) when its routes are chosen and
when models are listed."""

from __future__ import annotations

from ipaddress import ip_address

from gatehouse.accounts.access.errors import ModelNotAllowed, NetworkNotAllowed, SurfaceNotAllowed
from gatehouse.accounts.access.policy import AccessPolicy, Level
from gatehouse.auth.principal import Principal
from gatehouse.upstreams.upstream import Route

# The surfaces a key may be limited to (Call.surface; count_tokens belongs to messages).
SURFACES = ("chat", "responses", "messages", "completions", "ollama_chat", "generate", "embeddings")
SURFACE_OF = {"count_tokens": "messages"}
HOW_TO_GET_ACCESS = (
    "ask an administrator for access (an access rule for you or your group: POST /admin/access/rules); "
    "GET /v1/models (or /api/tags) lists the models you may use."
)


def check_key(principal: Principal, surface: str, client: str | None) -> None:
    """Refuse a request that the key's own restrictions exclude: its client surface or its client's address."""
    surfaces = principal.key_surfaces
    if surfaces is not None and SURFACE_OF.get(surface, surface) not in surfaces:
        raise SurfaceNotAllowed(
            f"This API key may only be used for: {', '.join(sorted(surfaces))}; this request is `{surface}`. Use "
            "another key, or ask an administrator to change the key's allowed_surfaces.",
        )
    networks = principal.key_networks
    if networks is not None:
        try:
            address = ip_address(client or "")
        except ValueError:
            address = None
        if address is None or not any(address in network for network in networks):
            raise NetworkNotAllowed(
                f"This API key may only be used from {', '.join(str(n) for n in networks)}; this request came from "
                f"{client or 'an unknown address'}. Use it from an allowed network, or ask an administrator to change "
                "the key's allowed_networks.",
            )


def permitted(policy: AccessPolicy, principal: Principal, model: str, routes: list[Route]) -> list[Route]:
    """The routes of `model` this caller may use (all of them when nothing restricts anyone)."""
    if policy.unrestricted and principal.key_models is None:
        return routes
    return [route for route in routes if policy.allows(principal, model, route.upstream.name)]


def refusal(policy: AccessPolicy, principal: Principal, model: str, routes: list[Route]) -> ModelNotAllowed:
    """The 403 for a model none of whose routes this caller may use, saying what refused it and what to do."""
    decision = policy.decide(principal, model, routes[0].upstream.name) if routes else None
    if decision is not None and decision.level is Level.KEY:
        allowed = ", ".join(principal.key_models or ())
        why = f"this API key is limited to the models {allowed}: use another key, or ask an administrator to widen it"
    elif decision is not None and decision.level is Level.DEFAULT:
        why = f"no access rule of yours or your groups allows it, and models are denied by default; {HOW_TO_GET_ACCESS}"
    else:
        where = "your group's" if decision is not None and decision.level is Level.GROUP else "your"
        why = f"{where} access rules deny it; {HOW_TO_GET_ACCESS}"
    return ModelNotAllowed(f"You may not use the model `{model}`: {why}", param="model")
