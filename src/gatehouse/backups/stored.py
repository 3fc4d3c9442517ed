"""A stored backup read back: its file checked against the manifest (size, SHA-256) and, when encrypted,
decrypted into a private scratch directory beside the backups, checked again. Verifying, decrypting and
restoring all start here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from gatehouse.backups.crypto import DecryptionError, Digests, decrypt_file
from gatehouse.backups.manifest import Manifest, backup_dir, size_problem
from gatehouse.backups.snapshot import Progress
from gatehouse.settings import Settings

_READ_SIZE = 1024 * 1024


class Unusable(Exception):
    """The stored file is damaged, cut short or needs another key: `problem` says which."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


async def plaintext(
    settings: Settings, manifest: Manifest, key: str | None, scratch: Path, progress: Progress | None
) -> Path:
    """The backup's plain database file (decrypted into `scratch` when encrypted), checked against its manifest."""
    path = settings.backup_dir / manifest.file
    if not await asyncio.to_thread(path.exists):
        raise Unusable(f"its file {path} is missing")
    size, sha = await asyncio.to_thread(sha256_file, path, progress)
    if problem := size_problem(manifest, size):
        raise Unusable(problem)
    if sha != manifest.sha256:
        raise Unusable("its file's SHA-256 does not match the manifest: the file is corrupted")
    if key is None:
        return path
    plain = scratch / manifest.file.removesuffix(".enc")
    try:
        digests = await asyncio.to_thread(_decrypt, path, plain, key, progress)
    except DecryptionError as exc:
        if exc.reason == "wrong_key":
            raise Unusable("it cannot be decrypted: BACKUP_KEY is not the key it was encrypted with") from exc
        raise Unusable(f"it cannot be decrypted: {exc}") from exc
    if (digests.output_size, digests.output_sha256) != (manifest.plaintext_size, manifest.plaintext_sha256):
        raise Unusable("its decrypted content does not match the manifest's SHA-256")
    return plain


def _decrypt(source: Path, target: Path, key: str, progress: Progress | None) -> Digests:
    fd = os.open(target, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as handle:
        return decrypt_file(source, handle, key, progress=progress)


@asynccontextmanager
async def scratch_dir(settings: Settings) -> AsyncIterator[Path]:
    """A private directory beside the backups (same disk, known space) for decrypted copies; removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix=".gatehouse-scratch-", dir=backup_dir(settings)))
    try:
        yield directory
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)


def sha256_file(path: Path, progress: Progress | None = None) -> tuple[int, str]:
    """Size and SHA-256 of a file, as a manifest records them."""
    sha = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_SIZE):
            sha.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return done, sha.hexdigest()
