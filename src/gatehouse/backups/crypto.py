"""Encrypted backup files: chunked AES-256-GCM under a key derived from BACKUP_KEY with scrypt.

The format (integers big-endian) keeps memory bounded whatever the size of the database:

    header = b"GHBACKUP" | version (1 byte: 1) | log2(N) (1) | r (1) | p (1) | chunk size (4)
             | salt (16) | nonce prefix (7) | key check (16)                                   -- 55 bytes
    then one sealed chunk after another: AES-256-GCM(key, nonce, chunk, aad=header) = ciphertext | 16-byte tag
    nonce  = nonce prefix (7) | chunk index (4) | 1 for the last chunk, else 0 (1)

scrypt(BACKUP_KEY, salt, N, r, p) gives 48 bytes: the AES key (32) and the key check (16) kept in the header,
which tells a wrong key from a damaged file without trying to decrypt. Every chunk but the last holds
exactly `chunk size` bytes and the last fewer (possibly none), so a file cut at a chunk boundary lacks its
last chunk and one cut inside a chunk fails that chunk's tag; the index in the nonce catches reordered or
repeated chunks, the header as associated data catches an edited header, and a random salt and nonce prefix
per file mean no key and nonce pair is ever used twice.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"GHBACKUP"
VERSION = 1
CHUNK_SIZE = 1024 * 1024
TAG_SIZE = 16
SCRYPT_LOG2_N = 17  # 128 MiB and about a quarter of a second, once per file: OWASP's recommendation
SCRYPT_R = 8
SCRYPT_P = 1
MAX_SCRYPT_LOG2_N = 20  # a header asking for more is refused rather than allowed to exhaust memory
_HEADER = struct.Struct(">8sBBBBI16s7s16s")
HEADER_SIZE = _HEADER.size

Progress = Callable[[int, int | None], None]


class DecryptionError(ValueError):
    """The file cannot be decrypted; `reason` is one of not_encrypted, wrong_key, truncated, corrupted."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Digests:
    """SHA-256 and size of what was read and of what was written."""

    source_sha256: str
    source_size: int
    output_sha256: str
    output_size: int


def is_encrypted(path: Path) -> bool:
    """Whether a file starts like an encrypted backup."""
    with path.open("rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def _derive(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> tuple[bytes, bytes]:
    material = Scrypt(salt=salt, length=48, n=2**log2_n, r=r, p=p).derive(passphrase.encode())
    return material[:32], material[32:]


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class _Hashing:
    """A writable file that hashes and counts what goes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha.update(data)
        self.size += len(data)


def encrypt_file(source: Path, target: BinaryIO, passphrase: str, *, progress: Progress | None = None) -> Digests:
    """Encrypt `source` into `target` (an open binary file)."""
    salt, prefix = os.urandom(16), os.urandom(7)
    key, check = _derive(passphrase, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    header = _HEADER.pack(MAGIC, VERSION, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, CHUNK_SIZE, salt, prefix, check)
    aead = AESGCM(key)
    out = _Hashing(target)
    out.write(header)
    plain = hashlib.sha256()
    total = source.stat().st_size
    done = 0
    with source.open("rb") as handle:
        chunk = handle.read(CHUNK_SIZE)
        index = 0
        while True:
            # A full chunk is never the last: the last one is short, possibly empty (see the module docstring).
            last = len(chunk) < CHUNK_SIZE
            out.write(aead.encrypt(_nonce(prefix, index, last), chunk, header))
            plain.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
            if last:
                break
            index += 1
            if index >= 2**32:
                raise ValueError("backup too large for one encrypted file (4 PiB)")
            chunk = handle.read(CHUNK_SIZE)
    return Digests(plain.hexdigest(), done, out.sha.hexdigest(), out.size)


def decrypt_file(source: Path, target: BinaryIO, passphrase: str, *, progress: Progress | None = None) -> Digests:
    """Decrypt `source` into `target`; DecryptionError says why it cannot be (nothing is trusted before its tag)."""
    total = source.stat().st_size
    stored = hashlib.sha256()
    out = _Hashing(target)
    with source.open("rb") as handle:
        header = handle.read(HEADER_SIZE)
        stored.update(header)
        if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
            raise DecryptionError("not_encrypted", "it is not an encrypted Gatehouse backup (or its header is damaged)")
        _, version, log2_n, r, p, chunk_size, salt, prefix, check = _HEADER.unpack(header)
        if version != VERSION:
            raise DecryptionError("corrupted", f"unknown encryption format version {version}")
        if not (10 <= log2_n <= MAX_SCRYPT_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16 and 1 <= chunk_size <= 2**26):
            raise DecryptionError("corrupted", "its encryption header is damaged")
        key, expected_check = _derive(passphrase, salt, log2_n, r, p)
        if not hmac.compare_digest(check, expected_check):
            raise DecryptionError("wrong_key", "BACKUP_KEY is not the key it was encrypted with")
        aead = AESGCM(key)
        index = 0
        while True:
            sealed = handle.read(chunk_size + TAG_SIZE)
            stored.update(sealed)
            last = len(sealed) < chunk_size + TAG_SIZE
            if last and len(sealed) < TAG_SIZE:
                raise DecryptionError("truncated", "the file is truncated (its last chunk is missing)")
            try:
                chunk = aead.decrypt(_nonce(prefix, index, last), sealed, header)
            except InvalidTag:
                if last:  # a cut inside the last chunk and damage to it look the same
                    message = f"the file is cut short or damaged at its end (chunk {index})"
                    raise DecryptionError("truncated", message) from None
                raise DecryptionError("corrupted", f"chunk {index} of the file is damaged") from None
            out.write(chunk)
            if progress:
                progress(handle.tell(), total)
            if last:
                break
            index += 1
        if handle.read(1):
            raise DecryptionError("corrupted", "the file has data after its last chunk")
    return Digests(stored.hexdigest(), total, out.sha.hexdigest(), out.size)
