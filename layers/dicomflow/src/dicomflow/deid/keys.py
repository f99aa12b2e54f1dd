"""The pseudonym key: one keyed MAC behind a small interface, local or in AWS KMS.

Everything the de-identifier derives from the patient (UIDs, pseudonyms, the date shift) is
``mac(purpose + value)``: deterministic for a key, unlinkable without it. :class:`LocalKey` holds the
secret in this process (a key file on a laptop); :class:`KmsHmacKey` asks AWS KMS ``GenerateMac``
with an ``HMAC_256`` key, so in AWS the secret never leaves KMS. MACs are cached per process: one
scan asks for the same few hundred UIDs many times.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dicomflow.errors import ConfigurationError
from dicomflow.privacy import fingerprint

#: Bytes of secret in a generated key file (HMAC-SHA256 key length).
KEY_BYTES = 32


@runtime_checkable
class PseudonymKey(Protocol):
    """A keyed MAC (HMAC-SHA256 or equivalent): 32 bytes, deterministic for a key and message."""

    @property
    def key_id(self) -> str:
        """A non-secret reference to the key (recorded in reports)."""

    def mac(self, message: bytes) -> bytes:
        """The 32-byte MAC of ``message``."""


class LocalKey:
    """HMAC-SHA256 with a secret held in this process.

    Examples
    --------
    >>> key = LocalKey(b"0" * 32)
    >>> key.mac(b"uid:1.2.3").hex()[:16]
    'd3390dd655d8561e'
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigurationError("a pseudonym key needs at least 16 bytes of secret")
        self._secret = bytes(secret)
        self._mac = lru_cache(maxsize=65536)(self._compute)

    @property
    def key_id(self) -> str:
        return "local:" + fingerprint(hashlib.sha256(b"key-id:" + self._secret).digest())

    def _compute(self, message: bytes) -> bytes:
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def mac(self, message: bytes) -> bytes:
        return self._mac(message)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKey:
        """Read a key file: hex text (as :meth:`generate_file` writes) or raw bytes.

        A key file that cannot be read (a folder, no permission) raises
        :class:`~dicomflow.errors.ConfigurationError` naming the file and the reason.
        """
        try:
            data = Path(path).read_bytes()
        except IsADirectoryError:
            raise ConfigurationError(f"the key file {os.fspath(path)} is a folder: give a file") from None
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the key file {os.fspath(path)}: {exc.strerror or type(exc).__name__}"
            ) from None
        text = data.strip()
        try:
            secret = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            secret = data
        return cls(secret)

    @classmethod
    def generate_file(cls, path: str | os.PathLike[str]) -> LocalKey:
        """Create a new random key file (mode 0600) and return its key. Never overwrites a file.

        The key is written in full to a temporary file beside ``path`` and flushed to disk, then
        hard-linked into place (which fails if ``path`` exists): a crash never leaves a truncated
        key that a later run would read as another key, and two runs creating the key at once
        cannot overwrite each other's (the second gets :class:`FileExistsError` and should read
        the key now there).
        """
        import secrets  # imports random: only when a key is made

        secret = secrets.token_bytes(KEY_BYTES)
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secret.hex() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise
            except OSError:
                # No hard links on this file system (FAT, some shares): exclusive create instead.
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(secret.hex() + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        except FileExistsError:
            if target.exists():
                raise
            raise ConfigurationError(f"cannot create the key file {target}: try again") from None
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the key file {target}: {exc.strerror or type(exc).__name__}"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return cls(secret)


class KmsHmacKey:
    """HMAC through AWS KMS ``GenerateMac`` (``HMAC_SHA_256``) with an ``HMAC_256`` key.

    Parameters
    ----------
    key_id : str
        KMS key id, ARN or alias of a ``KeySpec=HMAC_256`` key.
    client : boto3 KMS client, optional
        Created on first use if not given.

    Examples
    --------
    >>> import boto3
    >>> from moto import mock_aws
    >>> with mock_aws():
    ...     kms = boto3.client("kms", region_name="eu-west-1")
    ...     kid = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    ...     len(KmsHmacKey(kid, client=kms).mac(b"uid:1.2.3"))
    32
    """

    def __init__(self, key_id: str, *, client: Any | None = None) -> None:
        self._key_id = key_id
        self._client = client
        self._mac = lru_cache(maxsize=65536)(self._compute)

    @property
    def key_id(self) -> str:
        return "kms:" + self._key_id

    def _compute(self, message: bytes) -> bytes:
        if self._client is None:
            import boto3

            self._client = boto3.client("kms")
        response = self._client.generate_mac(KeyId=self._key_id, Message=message, MacAlgorithm="HMAC_SHA_256")
        return bytes(response["Mac"])

    def mac(self, message: bytes) -> bytes:
        return self._mac(message)
