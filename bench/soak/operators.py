"""Operators' actions during the soak, through the admin API as an operator would make them: blocks and unblocks,
upstream overrides (down, drain, up, lifted), terminations of live streams, key revocations and new keys, a backup
and its verification, a retention purge. A refused action is a failure of the soak."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import httpx

from bench.soak.traffic import World


class ActionFailed(Exception):
    """An admin call answered other than expected."""


async def _call(
    admin: httpx.AsyncClient, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kw: Any
) -> Any:
    answer = await admin.request(method, path, **kw)
    if answer.status_code not in ok:
        raise ActionFailed(f"{method} {path} answered {answer.status_code}: {answer.text[:300]}")
    return (
        answer.json()
        if answer.content and answer.headers.get("content-type", "").startswith("application/json")
        else None
    )


class Operators:
    """The actions, each a loop on its own period, recorded on the world's timeline."""

    def __init__(self, admin: httpx.AsyncClient, world: World, upstream_ids: dict[str, int], seed: int) -> None:
        self.admin = admin
        self.world = world
        self.upstream_ids = upstream_ids
        self.rng = random.Random(seed)
        self.failures: list[str] = []
        self.counts: dict[str, int] = {}
        self._terminations = 0

    def _done(self, action: str, detail: str = "") -> None:
        self.counts[action] = self.counts.get(action, 0) + 1
        self.world.event(action, detail)

    async def _every(self, period: float, action: Any, first: float | None = None) -> None:
        await self._sleep(self.rng.uniform(0.3, 1.0) * period if first is None else first)
        while not self.world.stop.is_set():
            try:
                await action()
            except Exception as exc:  # any failure of an action is the soak's finding, not its end
                self.failures.append(f"{time.monotonic() - self.world.started:.0f}s {action.__name__}: {exc!r}")
                self.world.event("action failed", f"{action.__name__}: {exc}")
            await self._sleep(period * self.rng.uniform(0.7, 1.3))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.world.stop.wait(), timeout=seconds)

    async def block_and_unblock(self) -> None:
        """Block a user for 10 s, then lift the block."""
        person = self.rng.choice(self.world.people)
        window = [time.monotonic(), float("inf")]
        person.blocks.append(window)
        await _call(self.admin, "POST", f"/admin/users/{person.user_id}/block", json={"reason": "soak: block"})
        self._done("block", person.email)
        await self._sleep(10)
        window[1] = time.monotonic()  # from now on a request may be served again
        await _call(self.admin, "POST", f"/admin/users/{person.user_id}/unblock")
        self._done("unblock", person.email)

    async def override_upstream(self) -> None:
        """soak-a forced down, then drained, then up, then its override lifted (soak-b serves meanwhile)."""
        upstream = self.upstream_ids["soak-a"]
        for state in ("down", "drain", "up"):
            body = {"state": state, "reason": f"soak: {state}"}
            await _call(self.admin, "PUT", f"/admin/upstreams/{upstream}/override", json=body)
            self._done(f"override {state}", "soak-a")
            await self._sleep(8)
        await _call(self.admin, "DELETE", f"/admin/upstreams/{upstream}/override")
        self._done("override lifted", "soak-a")

    async def terminate_stream(self) -> None:
        """End one live long stream that is producing tokens (the reason names it, so its client can tell)."""
        listing = await _call(self.admin, "GET", "/admin/streams")
        live = [s for s in listing["items"] if s.get("model") == "fake-long" and s.get("tokens", 0) > 0]
        if not live:
            self.world.event("terminate skipped", "no long stream producing tokens right now")
            return
        target = self.rng.choice(live)
        self._terminations += 1
        reason = f"soak-terminate-{self._terminations}"
        self.world.terminated.add(reason)  # before the call: the client may see it before the answer comes back
        answer = await self.admin.post(f"/admin/streams/{target['id']}/terminate", json={"reason": reason})
        if answer.status_code == 404:  # it ended on its own meanwhile
            self.world.event("terminate missed", "the stream had ended")
            return
        if answer.status_code not in (200, 202):
            raise ActionFailed(f"terminate answered {answer.status_code}: {answer.text[:300]}")
        self._done("terminate", reason)

    async def revoke_key(self) -> None:
        """Revoke a user's key, and give them a new one 5 s later (their client keeps the old one until then)."""
        person = self.rng.choice(self.world.people)
        old_key, old_id = person.key, person.key_id
        person.revoked[old_key] = time.monotonic()
        await _call(self.admin, "DELETE", f"/admin/keys/{old_id}")
        self._done("revoke key", person.email)
        await self._sleep(5)
        created = await _call(self.admin, "POST", f"/admin/users/{person.user_id}/keys", json={"name": "soak"})
        person.key, person.key_id = created["key"], created["id"]
        self._done("new key", person.email)

    async def backup_and_verify(self) -> None:
        """A backup run now (the job, as the schedule would), then that backup restored and compared (verify)."""
        run = await _call(self.admin, "POST", "/admin/jobs/backup/run", params={"wait": "true"}, timeout=600)
        if run.get("status") != "ok":
            raise ActionFailed(f"backup run ended {run.get('status')}: {run}")
        self._done("backup", str(run.get("counts", {}))[:120])
        listing = await _call(self.admin, "GET", "/admin/backups")
        name = listing["backups"][0]["name"]  # newest first
        verified = await _call(self.admin, "POST", f"/admin/backups/{name}/verify", timeout=600)
        if not verified.get("ok"):
            raise ActionFailed(f"backup {name} failed its verification: {verified.get('problems')}")
        self._done("backup verified", f"{name}: {verified.get('rows')} rows")

    async def purge(self) -> None:
        """The retention purge, run now."""
        run = await _call(self.admin, "POST", "/admin/jobs/purge/run", params={"wait": "true"}, timeout=600)
        if run.get("status") != "ok":
            raise ActionFailed(f"purge run ended {run.get('status')}: {run}")
        self._done("purge", str(run.get("counts", {}))[:120])

    async def run(self, minutes: float) -> None:
        """Every action on its period until the soak stops; the backup and the purge at a third and two thirds."""
        seconds = minutes * 60

        async def once(delay: float, action: Any) -> None:
            await self._sleep(delay)
            if self.world.stop.is_set():
                return
            try:
                await action()
            except Exception as exc:  # any failure of an action is the soak's finding, not its end
                self.failures.append(f"{action.__name__}: {exc!r}")
                self.world.event("action failed", f"{action.__name__}: {exc}")

        await asyncio.gather(
            self._every(40, self.block_and_unblock),
            self._every(60, self.override_upstream),
            self._every(12, self.terminate_stream),
            self._every(50, self.revoke_key),
            once(seconds / 3, self.backup_and_verify),
            once(2 * seconds / 3, self.purge),
        )
