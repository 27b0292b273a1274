"""Detached Ed25519 signatures of a bundle's manifest: who released the bundle.

The custodian signs with a private key (``dpsynth release --sign-key KEY``); the
bundle then holds ``manifest.json.sig``, the raw 64-byte Ed25519 signature of the
exact bytes of ``manifest.json``. The manifest lists every other file with its
SHA-256, so the signature covers the whole bundle. A researcher who got the
custodian's *public* key by another channel checks it with
``dpsynth inspect --verify-key KEY.pub``, or without dpsynth::

    openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin \\
        -in manifest.json -sigfile manifest.json.sig

Keys are PEM files: a PKCS#8 private key (unencrypted: it is mounted from a secret
store, never typed in) and a SubjectPublicKeyInfo public key, as made by
:func:`generate_keypair` (``dpsynth keygen``) or by
``openssl genpkey -algorithm ed25519 -out KEY`` and
``openssl pkey -in KEY -pubout -out KEY.pub``. A key's fingerprint is
``sha256:`` and the hex SHA-256 of its DER public key
(``openssl pkey -pubin -in KEY.pub -outform DER | sha256sum``).

Errors are :class:`~dpsynth.errors.UsageError` (exit 2) naming the file, never its
content.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dpsynth.errors import UsageError

__all__ = ["PublicKey", "Signer", "generate_keypair", "load_public_key", "load_signer",
           "verify_signature"]

SIGNATURE_BYTES = 64


def _fingerprint(key: Ed25519PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key and its fingerprint."""

    key: Ed25519PublicKey
    fingerprint: str


class Signer:
    """Signs bytes with a custodian's private key (``signer(data) -> signature``)."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        pub = key.public_key()
        self.public = PublicKey(pub, _fingerprint(pub))

    def __call__(self, data: bytes) -> bytes:
        sig = self._key.sign(data)
        self.public.key.verify(sig, data)  # a signature we could not check is never written
        return sig

    def __repr__(self) -> str:
        return f"Signer({self.public.fingerprint})"

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("a Signer holds a private key and cannot be pickled")


def _read(path: Path, what: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{option} ({str(path)!r}) does not exist") from None
    except OSError as exc:
        raise UsageError(f"{option} ({str(path)!r}) cannot be read as {what} "
                         f"({exc.strerror or type(exc).__name__})") from None


def load_signer(path: str | Path, option: str = "--sign-key") -> Signer:
    """The signer of a PEM Ed25519 private key file (:class:`UsageError` otherwise)."""
    data = _read(Path(path), "a private key", option)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(f"{option} ({str(path)!r}) is an encrypted key; dpsynth reads "
                         "unencrypted PEM keys (keep the file in a secret store)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{option} ({str(path)!r}) must be a PEM Ed25519 private key "
                         "(dpsynth keygen, or openssl genpkey -algorithm ed25519)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{option} ({str(path)!r}) must be an Ed25519 key, not "
                         f"{type(key).__name__.removesuffix('PrivateKey').lstrip('_')}")
    return Signer(key)


def load_public_key(path: str | Path, option: str = "--verify-key") -> PublicKey:
    """A PEM Ed25519 public key file (:class:`UsageError` otherwise; a private key is
    refused: the researcher needs, and should hold, only the public half)."""
    data = _read(Path(path), "a public key", option)
    if b"PRIVATE KEY" in data:
        raise UsageError(f"{option} ({str(path)!r}) is a private key; pass the public key "
                         "(KEY.pub, or openssl pkey -in KEY -pubout)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{option} ({str(path)!r}) must be a PEM Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{option} ({str(path)!r}) must be an Ed25519 public key")
    return PublicKey(key, _fingerprint(key))


def verify_signature(key: PublicKey, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``key``'s Ed25519 signature of ``data``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        key.key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def generate_keypair(path: str | Path) -> tuple[Path, Path, str]:
    """Create a new key pair: ``path`` (private, PEM PKCS#8, mode 0600) and
    ``path.pub`` (public, PEM). Refuses to overwrite either file. Returns both paths
    and the fingerprint."""
    private = Path(path)
    public = private.with_name(private.name + ".pub")
    for p in (private, public):
        if p.exists() or p.is_symlink():
            raise UsageError(f"key file {str(p)!r} already exists; keys are never overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key()
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        with open(public, "xb") as fh:
            fh.write(pub.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    except OSError as exc:
        raise UsageError(f"cannot write the key pair at {str(private)!r} "
                         f"({exc.strerror or type(exc).__name__})") from None
    return private, public, _fingerprint(pub)
