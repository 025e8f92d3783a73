"""KMS envelope encryption: a fresh data key per write, AES-256-GCM, encryption context as AAD.

The encryption context names the vendor, the record and the purpose (security-checklist C1):
KMS binds it to the wrapped data key and AES-GCM binds it to the ciphertext, so a ciphertext
copied into another row fails to decrypt. Plaintext data keys are cached for a few minutes,
keyed by their wrapped form, to keep KMS off the warm read path (C3).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chalicelib.errors import BrokerError

ENVELOPE_VERSION = "v1"


class DecryptionError(BrokerError):
    """A stored secret cannot be decrypted: tampered, moved to another row, or wrong key."""

    def __init__(self) -> None:
        super().__init__(
            "decryption_failed", 500, "Stored secret unreadable", "A stored secret failed to decrypt."
        )


class KeyServiceUnavailable(BrokerError):
    def __init__(self) -> None:
        super().__init__(
            "key_service_unavailable",
            503,
            "Key service unavailable",
            "Try again shortly.",
            {"Retry-After": "2"},
        )


def record_context(purpose: str, vendor_id: str, record: str) -> dict[str, str]:
    """The encryption context of one stored secret: no PII or secret, it shows in CloudTrail (C1)."""
    return {"app": "xpm-broker", "purpose": purpose, "vendor_id": vendor_id, "record": record}


def canonical_context(context: Mapping[str, str]) -> bytes:
    return json.dumps(dict(sorted(context.items())), separators=(",", ":"), ensure_ascii=True).encode()


class EnvelopeCipher:
    def __init__(
        self,
        kms_client: Callable[[], Any],
        key_id: str,
        cache_seconds: float = 300.0,
        cache_size: int = 512,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kms_factory = kms_client
        self._kms: Any = None
        self._key_id = key_id
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.kms_calls = 0

    def _client(self) -> Any:
        if self._kms is None:
            self._kms = self._kms_factory()
        return self._kms

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> str:
        """Encrypt under a fresh data key; returns ``v1.<wrapped key>.<nonce>.<ciphertext>``."""
        self._check_context(context)
        try:
            self.kms_calls += 1
            answer = self._client().generate_data_key(
                KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=dict(context)
            )
        except Exception as exc:
            raise _kms_error(exc) from exc
        data_key, wrapped = answer["Plaintext"], answer["CiphertextBlob"]
        self._remember(wrapped, data_key)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, canonical_context(context))
        return ".".join([ENVELOPE_VERSION, *(_b64(part) for part in (wrapped, nonce, ciphertext))])

    def decrypt(self, envelope: str, context: Mapping[str, str]) -> bytes:
        self._check_context(context)
        try:
            version, wrapped_b64, nonce_b64, ciphertext_b64 = envelope.split(".")
            wrapped, nonce, ciphertext = (_unb64(p) for p in (wrapped_b64, nonce_b64, ciphertext_b64))
        except ValueError as exc:
            raise DecryptionError() from exc
        if version != ENVELOPE_VERSION:
            raise DecryptionError()
        data_key = self._data_key(wrapped, context)
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, canonical_context(context))
        except InvalidTag as exc:
            raise DecryptionError() from exc

    def encrypt_text(self, text: str, context: Mapping[str, str]) -> str:
        return self.encrypt(text.encode(), context)

    def decrypt_text(self, envelope: str, context: Mapping[str, str]) -> str:
        return self.decrypt(envelope, context).decode()

    def _data_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        # The cache is keyed by the wrapped key only after KMS accepted it with *this* context
        # once; a moved ciphertext still fails at AES-GCM because the AAD differs.
        cached = self._recall(wrapped)
        if cached is not None:
            return cached
        try:
            self.kms_calls += 1
            answer = self._client().decrypt(CiphertextBlob=wrapped, EncryptionContext=dict(context))
        except Exception as exc:
            raise _kms_error(exc) from exc
        data_key: bytes = answer["Plaintext"]
        self._remember(wrapped, data_key)
        return data_key

    def _remember(self, wrapped: bytes, data_key: bytes) -> None:
        with self._lock:
            self._cache[wrapped] = (self._clock() + self._cache_seconds, data_key)
            self._cache.move_to_end(wrapped)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _recall(self, wrapped: bytes) -> bytes | None:
        with self._lock:
            entry = self._cache.get(wrapped)
            if entry is None:
                return None
            expires, data_key = entry
            if expires <= self._clock():
                del self._cache[wrapped]
                return None
            return data_key

    @staticmethod
    def _check_context(context: Mapping[str, str]) -> None:
        if not context or "purpose" not in context:
            raise ValueError("an encryption context with a purpose is required")


def _kms_error(exc: Exception) -> BrokerError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    if code in {"InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException"}:
        return DecryptionError()
    return KeyServiceUnavailable()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_cipher: EnvelopeCipher | None = None
_cipher_lock = threading.Lock()


def get_cipher() -> EnvelopeCipher:
    """The process-wide cipher for the configured KMS key (KMS client built on first use)."""
    global _cipher  # noqa: PLW0603 - one warm cache per Lambda container
    from chalicelib.aws import aws_client
    from chalicelib.config import get_settings

    with _cipher_lock:
        settings = get_settings()
        if _cipher is None or _cipher._key_id != settings.kms_key_id:
            _cipher = EnvelopeCipher(lambda: aws_client("kms"), settings.kms_key_id)
        return _cipher


def reset_cipher() -> None:
    global _cipher  # noqa: PLW0603
    with _cipher_lock:
        _cipher = None
