"""Signing keys of the built-in issuer: one PEM private key per file in a folder, the file name is the `kid`.

Rotation without downtime: add a new key file and make it active (`active_kid`, or simply the newest file); the old
key stays published in the JWKS so tokens it signed keep verifying; delete its file once those tokens have expired
(at most `token_ttl_s` later). Every gateway process reading the same folder signs with the same key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, KeySetSerialization, RSAKey

from .config import BuiltinIssuerSettings

KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SigningKeyProblem(Exception):
    """The signing keys cannot be loaded; the message says which file and why."""


@dataclass
class SigningKeys:
    active_kid: str
    private: dict[str, Any]  # kid -> joserfc key with its private part
    algorithm: str

    @property
    def active(self) -> Any:
        return self.private[self.active_kid]

    def jwks(self) -> KeySetSerialization:
        """The public half of every key: what /.well-known/jwks.json publishes."""
        keys = []
        for kid, key in sorted(self.private.items()):
            public = key.as_dict(private=False)
            public.update(kid=kid, use="sig", alg=self.algorithm)
            keys.append(public)
        return {"keys": keys}


def _generate(folder: Path, algorithm: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    kid = "gw-1"
    key = RSAKey.generate_key(2048, private=True) if algorithm == "RS256" else ECKey.generate_key("P-256", private=True)
    pem = key.as_pem(private=True)
    try:
        # O_EXCL: when several workers start at once, exactly one creates the key and the others read it.
        fd = os.open(folder / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def load_signing_keys(settings: BuiltinIssuerSettings, base_dir: Path) -> SigningKeys:
    folder = settings.keys_dir if settings.keys_dir.is_absolute() else base_dir / settings.keys_dir
    files = sorted(folder.glob("*.pem"), key=lambda p: (p.stat().st_mtime, p.name)) if folder.is_dir() else []
    if not files and settings.generate_missing_keys:
        _generate(folder, settings.algorithm)
        files = sorted(folder.glob("*.pem"), key=lambda p: (p.stat().st_mtime, p.name))
    if not files:
        raise SigningKeyProblem(f"auth.builtin.keys_dir {folder}: no signing key (*.pem); create one with "
                        "`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out <kid>.pem`")
    private: dict[str, Any] = {}
    for file in files:
        kid = file.stem
        if not KID.match(kid):
            raise SigningKeyProblem(f"{file}: the file name is the key id and must match {KID.pattern}")
        cls = RSAKey if settings.algorithm == "RS256" else ECKey
        try:
            key = cls.import_key(file.read_bytes())
        except Exception as exc:  # joserfc raises several types for unreadable keys
            raise SigningKeyProblem(f"{file}: not a {settings.algorithm} private key in PEM "
                                    f"({type(exc).__name__})") from None
        if not key.is_private:
            raise SigningKeyProblem(f"{file}: holds a public key; the issuer needs the private key")
        private[kid] = key
    active = settings.active_kid or files[-1].stem
    if active not in private:
        raise SigningKeyProblem(f"auth.builtin.active_kid {active!r} has no key file in {folder}")
    return SigningKeys(active, private, settings.algorithm)
