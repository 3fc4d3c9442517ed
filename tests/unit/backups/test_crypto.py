"""The encrypted backup format: round trips, and every way a file can be wrong is told apart."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from gatehouse.backups import crypto as backup_crypto
from gatehouse.backups.crypto import HEADER_SIZE, TAG_SIZE, DecryptionError, decrypt_file, encrypt_file

KEY = "correct horse battery staple"
CHUNK = 64


@pytest.fixture(autouse=True)
def small_and_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_crypto, "CHUNK_SIZE", CHUNK)
    monkeypatch.setattr(backup_crypto, "SCRYPT_LOG2_N", 10)


def _encrypt(tmp_path: Path, plain: bytes) -> Path:
    source = tmp_path / "plain"
    source.write_bytes(plain)
    sealed = tmp_path / "sealed"
    with sealed.open("wb") as handle:
        digests = encrypt_file(source, handle, KEY)
    assert digests.source_size == len(plain) and digests.output_size == sealed.stat().st_size
    return sealed


def _decrypt(path: Path, key: str = KEY) -> bytes:
    out = io.BytesIO()
    decrypt_file(path, out, key)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 17])
def test_round_trip(tmp_path: Path, size: int) -> None:
    plain = os.urandom(size)
    sealed = _encrypt(tmp_path, plain)
    assert size < 16 or plain not in sealed.read_bytes()  # shorter strings may turn up by chance
    assert _decrypt(sealed) == plain


def _reason(path: Path, key: str = KEY) -> str:
    with pytest.raises(DecryptionError) as failure:
        _decrypt(path, key)
    return failure.value.reason


def test_a_wrong_key_is_named(tmp_path: Path) -> None:
    assert _reason(_encrypt(tmp_path, os.urandom(200)), "another key entirely") == "wrong_key"


@pytest.mark.parametrize("cut", ["chunk boundary", "inside a chunk", "header"])
def test_truncation_is_caught(tmp_path: Path, cut: str) -> None:
    sealed = _encrypt(tmp_path, os.urandom(3 * CHUNK + 10))
    data = sealed.read_bytes()
    keep = {
        "chunk boundary": HEADER_SIZE + 2 * (CHUNK + TAG_SIZE),
        "inside a chunk": len(data) - 5,
        "header": 20,
    }[cut]
    sealed.write_bytes(data[:keep])
    assert _reason(sealed) == ("not_encrypted" if cut == "header" else "truncated")


def test_a_flipped_byte_reordered_chunks_and_appended_data_are_caught(tmp_path: Path) -> None:
    sealed = _encrypt(tmp_path, os.urandom(3 * CHUNK + 10))
    data = sealed.read_bytes()
    first = HEADER_SIZE
    second = first + CHUNK + TAG_SIZE

    flipped = bytearray(data)
    flipped[first + 3] ^= 0x80
    sealed.write_bytes(bytes(flipped))
    assert _reason(sealed) == "corrupted"

    swapped = (
        data[:first] + data[second : second + CHUNK + TAG_SIZE] + data[first:second] + data[second + CHUNK + TAG_SIZE :]
    )
    sealed.write_bytes(swapped)
    assert _reason(sealed) == "corrupted"

    sealed.write_bytes(data + b"more")
    assert _reason(sealed) == "truncated"  # the last chunk no longer authenticates: its end is wrong

    header = bytearray(data)
    header[HEADER_SIZE - 20] ^= 0x01  # the nonce prefix: authenticated as associated data
    sealed.write_bytes(bytes(header))
    assert _reason(sealed) == "corrupted"


def test_a_plain_file_is_not_taken_for_an_encrypted_one(tmp_path: Path) -> None:
    plain = tmp_path / "plain.sqlite"
    plain.write_bytes(b"SQLite format 3\x00" + os.urandom(100))
    assert not backup_crypto.is_encrypted(plain)
    assert _reason(plain) == "not_encrypted"
