"""Whether a change to a key's restrictions only narrows them: what a user may do to their own keys without an
administrator (a restriction an administrator set is not theirs to lift).

The checks are sound rather than complete: a change they accept never lets the key do more, and a narrowing they
cannot prove (a pattern covered only by several patterns together) is refused with a message saying how to get it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from gatehouse.accounts.errors import KeySettingNotAllowed

ASK = "ask an administrator (PATCH /admin/keys/{id})"


def _covers(wide: str, narrow: str) -> bool:
    """Whether every name pattern `narrow` matches, pattern `wide` matches too. `*` (any characters) in `wide`
    absorbs anything of `narrow`, wildcards included; `?` (one character) in `wide` absorbs one character or one `?`
    of `narrow`; anything else must be equal. Character classes (`[...]`) are compared only as equal patterns."""
    if wide == narrow:
        return True
    if "[" in wide or "[" in narrow:
        return False
    # `narrow` as a string of tokens: its wildcards as characters no model name holds.
    subject = narrow.replace("*", "\x00").replace("?", "\x01")
    regex = "".join(".*" if c == "*" else "[^\x00]" if c == "?" else re.escape(c) for c in wide)
    return re.fullmatch(regex, subject, flags=re.DOTALL) is not None


def _within(wide: list[str], narrow: list[str]) -> list[str]:
    """The patterns of `narrow` that no pattern of `wide` covers."""
    return [n for n in narrow if not any(_covers(w, n) for w in wide)]


def _networks_outside(wide: list[str], narrow: list[str]) -> list[str]:
    inside = [ipaddress.ip_network(w) for w in wide]
    outside = []
    for text in narrow:
        network = ipaddress.ip_network(text)
        if not any(network.version == w.version and network.subnet_of(w) for w in inside):  # type: ignore[arg-type]
            outside.append(text)
    return outside


def ensure_narrows(key_id: int, current: dict[str, Any], changes: dict[str, Any]) -> None:
    """403 `key_setting_not_allowed` unless `changes` (settings sent by the key's owner) only narrow `current`."""
    ask = ASK.replace("{id}", str(key_id))
    for field, after in changes.items():
        before = current[field]
        if after == before:
            continue
        if field == "acts_for_users":
            raise KeySettingNotAllowed(f"Only an administrator sets acts_for_users: {ask}.", param=field)
        if field == "group_id":
            raise KeySettingNotAllowed(
                f"The group of an existing key is changed by an administrator: {ask}, or create a new key with "
                "group_id set to one of your groups.",
                param=field,
            )
        if before is None:
            continue  # any restriction narrows an unrestricted key
        if after is None:
            raise KeySettingNotAllowed(f"You cannot lift {field} from your own key: {ask}.", param=field)
        if field == "rate_per_minute":
            if after > before:
                raise KeySettingNotAllowed(
                    f"rate_per_minute may only be lowered on your own key (now {before}): {ask} to raise it.",
                    param=field,
                )
            continue
        if field == "allowed_models":
            wider = _within(before, after)
        elif field == "allowed_networks":
            wider = _networks_outside(before, after)
        else:  # allowed_surfaces
            wider = [s for s in after if s not in before]
        if wider:
            raise KeySettingNotAllowed(
                f"{field} may only be narrowed on your own key: {', '.join(wider)} is not within "
                f"{', '.join(before)}. Choose within them, or {ask} to widen it.",
                param=field,
            )
