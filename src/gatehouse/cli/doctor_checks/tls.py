"""TLS certificates of PUBLIC_URL and of every https upstream: verified as clients verify them (the system's CA
store; SSL_CERT_FILE / SSL_CERT_DIR name others, as for any OpenSSL program), and their expiry."""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import urlsplit

from gatehouse.cli.doctor_checks.report import Check, failed, passed, skipped, warned

WARN_DAYS = 21
FAIL_DAYS = 7


async def certificate_checks(public_url: str, upstream_urls: list[str], wait: float) -> list[Check]:
    """PUBLIC_URL's certificate (a SKIP when it is not https), then one check per other https host:port."""
    public, upstreams = await asyncio.gather(
        public_url_certificate(public_url, wait), upstream_certificates(upstream_urls, wait, besides=public_url)
    )
    return [public, *upstreams]


async def public_url_certificate(public_url: str, wait: float) -> Check:
    """PUBLIC_URL's certificate; SKIP when PUBLIC_URL is not set or not https."""
    if not public_url:
        return skipped("tls.public_url", "PUBLIC_URL is not set (the URL people reach Gatehouse at)")
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.hostname:
        return skipped("tls.public_url", f"PUBLIC_URL {public_url} is not https (TLS ends elsewhere?)")
    return await _certificate("tls.public_url", parts.hostname, parts.port or 443, wait)


async def upstream_certificates(urls: list[str], wait: float, *, besides: str = "") -> list[Check]:
    """One check per distinct https host:port among `urls` (not PUBLIC_URL's, checked on its own)."""
    public = urlsplit(besides)
    skip = {(public.hostname, public.port or 443)} if public.scheme == "https" else set()
    targets: list[tuple[str, int]] = []
    for url in urls:
        parts = urlsplit(url)
        target = (parts.hostname or "", parts.port or 443)
        if parts.scheme == "https" and parts.hostname and target not in skip and target not in targets:
            targets.append(target)
    return list(await asyncio.gather(*(_certificate(f"tls.{host}:{port}", host, port, wait) for host, port in targets)))


async def _certificate(name: str, host: str, port: int, wait: float) -> Check:
    where = f"{host}:{port}"
    context = ssl.create_default_context()
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context, server_hostname=host), wait)
    except ssl.SSLCertVerificationError as exc:
        return failed(
            name,
            f"{where}: the certificate does not verify ({exc.verify_message})",
            "install a certificate from a CA clients trust, for this host name (with its intermediates)",
            time.perf_counter() - started,
        )
    except (TimeoutError, OSError, ssl.SSLError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return failed(
            name,
            f"{where}: no TLS connection ({reason})",
            f"check that {where} serves https",
            time.perf_counter() - started,
        )
    took = time.perf_counter() - started
    try:
        certificate = writer.get_extra_info("peercert") or {}
    finally:
        writer.close()
    not_after = certificate.get("notAfter")
    if not isinstance(not_after, str):
        return warned(name, f"{where}: the certificate has no expiry date", "check the certificate", took)
    days = (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400
    renew = f"renew the certificate of {host} (e.g. check cert-manager or certbot's renewal)"
    if days < FAIL_DAYS:
        state = "has expired" if days < 0 else f"expires in {days:.1f} days"
        return failed(name, f"{where}: the certificate {state} ({not_after})", renew, took)
    if days < WARN_DAYS:
        return warned(name, f"{where}: the certificate expires in {days:.0f} days ({not_after})", renew, took)
    return passed(name, f"{where}: the certificate is valid for {days:.0f} more days", took)
