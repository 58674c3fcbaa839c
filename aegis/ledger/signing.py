"""The ledger's Ed25519 signing key: made on first use, kept private, published as PEM.

The private key lives in ``keys/ledger_ed25519.pem`` with mode 0600 in a 0700
directory, and is refused when anyone but the owner can read it (a key others
can read signs for them too); ``aegis audit verify`` fails on loose permissions
of either. The public key is written beside it (``ledger_ed25519.pub.pem``) for
export; ``key_id`` is its fingerprint, so a record names the key that signed it.

Trust does not come from this directory. The keys the ledger trusts are pinned
in the chain itself (the genesis record, then rotation records each signed by
the key it retires) and in the witness checkpoints (:mod:`aegis.ledger.witness`):
a public key dropped into ``keys/`` is never trusted, and a private key made
here after the trusted one was lost cannot extend the ledger. Rotation:
:meth:`aegis.ledger.Ledger.rotate_key` (``aegis audit rotate-key``).

Old public keys are still archived as ``<key_id>.pub.pem`` when replaced, so a
person can see what was there; verification never reads them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_KEY_FILE = "ledger_ed25519.pem"
PUBLIC_KEY_FILE = "ledger_ed25519.pub.pem"
PUBLIC_KEY_GLOB = "*.pub.pem"
ARCHIVE_SUFFIX = ".pub.pem"
UNREADABLE_SUFFIX = ".unreadable"
NEXT_KEY_FILE = "ledger_ed25519.next.pem"  # a rotation's new key, until the rotation record is committed
PRIVATE_MODE = 0o600
KEY_DIR_MODE = 0o700
LOOSE_BITS = 0o077
FINGERPRINT_HEX = 32


class LedgerKeyError(RuntimeError):
    """The signing key cannot be used safely (permissions, corrupt file)."""


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """``key_id``: sha256 of the raw public key, shortened; stable across PEM re-encodings."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:FINGERPRINT_HEX]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_pem(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerKeyError(f"not an Ed25519 public key: {type(key).__name__}")
    return key


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    key_id: str
    public_key_pem: str

    def sign(self, digest_hex: str) -> str:
        """Signature over the record hash (its 32 raw bytes), base64."""
        return base64.b64encode(self.private_key.sign(bytes.fromhex(digest_hex))).decode()


def verify_signature(public_key: Ed25519PublicKey, digest_hex: str, signature_b64: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), bytes.fromhex(digest_hex))
    except (InvalidSignature, ValueError):
        return False
    return True


def check_private_permissions(path: Path) -> None:
    """Refuse a private key that group or others may read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise LedgerKeyError(
            f"refusing to use {path}: permissions are {mode:04o}, the ledger signing key must be readable by "
            f"its owner only; run: chmod 600 {path}"
        )


def key_dir_problem(key_dir: Path) -> str | None:
    """Why the key directory or the private key in it is unsafe (group/other access), or None; read-only."""
    if not key_dir.exists():
        return None
    mode = stat.S_IMODE(key_dir.stat().st_mode)
    if mode & LOOSE_BITS:
        return (
            f"the key directory {key_dir} has permissions {mode:04o}: others can list or replace the ledger's "
            f"keys; run: chmod 700 {key_dir}"
        )
    for name in (PRIVATE_KEY_FILE, NEXT_KEY_FILE):
        path = key_dir / name
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & LOOSE_BITS:
                return (
                    f"the ledger's private key {path} has permissions {mode:04o}: it must be readable by its "
                    f"owner only; run: chmod 600 {path}"
                )
    return None


def tighten_key_dir(key_dir: Path) -> None:
    """Make the key directory 0700 when it is looser (``AegisPaths.ensure`` makes it with the umask)."""
    mode = stat.S_IMODE(key_dir.stat().st_mode)
    if mode & LOOSE_BITS:
        os.chmod(key_dir, KEY_DIR_MODE)


def load_private(path: Path) -> SigningKey:
    """The signing key stored at ``path`` (permissions checked first)."""
    check_private_permissions(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise LedgerKeyError(f"{path} is not a readable PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return signing_key(key)


def signing_key(key: Ed25519PrivateKey) -> SigningKey:
    pub = key.public_key()
    return SigningKey(private_key=key, key_id=fingerprint(pub), public_key_pem=public_pem(pub))


def write_private(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` at ``path`` (0600, fsynced) atomically, replacing what was there."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def install_public(key_dir: Path, key: SigningKey) -> None:
    """Write ``key``'s public half as the current public key (archiving the one it replaces)."""
    pub_path = key_dir / PUBLIC_KEY_FILE
    if pub_path.exists() and pub_path.read_text() != key.public_key_pem:
        archive_public_file(pub_path)
    if not pub_path.exists() or pub_path.read_text() != key.public_key_pem:
        _write_public(pub_path, key.public_key_pem)


def load_or_create(key_dir: Path) -> SigningKey:
    """The signing key of ``key_dir``, made on first use (race-free between processes).

    Only writers (appending to the ledger) call this. Before a new key is made
    where a public key already exists, that public key is archived under its
    key_id, so the records it signed stay verifiable.
    """
    key_dir.mkdir(parents=True, exist_ok=True, mode=KEY_DIR_MODE)
    tighten_key_dir(key_dir)
    path = key_dir / PRIVATE_KEY_FILE
    pub_path = key_dir / PUBLIC_KEY_FILE
    if not path.exists():
        if pub_path.exists():  # a key signed before and its private half is gone: keep its public half
            archive_public_file(pub_path)
        _create(key_dir, path)
    check_private_permissions(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise LedgerKeyError(f"{path} is not a readable PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    pub = key.public_key()
    pem = public_pem(pub)
    if not pub_path.exists() or pub_path.read_text() != pem:
        if pub_path.exists():  # replaced by hand (or by a rotation elsewhere): archive before overwriting
            archive_public_file(pub_path)
        _write_public(pub_path, pem)
    return SigningKey(private_key=key, key_id=fingerprint(pub), public_key_pem=pem)


def archive_name(key_id: str) -> str:
    """``<key_id>.pub.pem``: the file an archived public key lives in (matches ``PUBLIC_KEY_GLOB``)."""
    return f"{key_id}{ARCHIVE_SUFFIX}"


def archive_public_file(pub_path: Path) -> Path:
    """Copy the public key at ``pub_path`` to ``<key_id>.pub.pem`` beside it (idempotent); return the copy.

    A file that is not a readable Ed25519 public key cannot be trusted anyway;
    it is moved aside (``.unreadable``, outside the trusted glob) rather than
    silently overwritten, so a person can still look at it.
    """
    raw = pub_path.read_bytes()
    try:
        pub = load_public_pem(raw)
    except (ValueError, LedgerKeyError):
        aside = pub_path.with_name(pub_path.name + UNREADABLE_SUFFIX)
        os.replace(pub_path, aside)
        return aside
    dest = pub_path.with_name(archive_name(fingerprint(pub)))
    if dest != pub_path and not dest.exists():
        _write_public(dest, public_pem(pub))
    return dest


def _create(key_dir: Path, path: Path) -> None:
    """Write a new key under a temp name, then link it into place: a concurrent maker loses cleanly."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = key_dir / f".{PRIVATE_KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process made the key first: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _write_public(pub_path: Path, pem: str) -> None:
    tmp = pub_path.with_name(f".{pub_path.name}.{os.getpid()}.tmp")
    tmp.write_text(pem)
    os.chmod(tmp, 0o644)
    os.replace(tmp, pub_path)


def current_public_key(key_dir: Path) -> tuple[str, str] | None:
    """(key_id, PEM) of the current public key (``ledger_ed25519.pub.pem``), or None; read-only."""
    pub_path = key_dir / PUBLIC_KEY_FILE
    try:
        pub = load_public_pem(pub_path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        raise LedgerKeyError(f"{pub_path} is not a readable PEM public key: {exc}") from exc
    return fingerprint(pub), public_pem(pub)
