"""Helpers for webhook receivers: verify Aragora's signatures.

``verify_signature(payload, signature, secret)`` accepts either header:
- ``X-Signature-SHA256: sha256=<hex>`` (HMAC-SHA256 of the raw body with the secret's UTF-8 bytes,
  exactly the guide's verifier), or
- ``webhook-signature: v1,<base64> …`` (Standard Webhooks); then pass ``msg_id`` and ``timestamp``
  from the ``webhook-id`` and ``webhook-timestamp`` headers. ``whsec_`` secrets are base64-decoded.

Whatever the sender put in the headers (a missing, non-numeric or stale timestamp, a malformed
signature header, invalid base64, non-ASCII bytes), the answer is ``False``, never an exception;
only a ``whsec_`` secret of your own that is not base64 raises ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Optional, Tuple, Union

Bytes = Union[bytes, bytearray, str]
_DIGITS = re.compile(r"[0-9]{1,20}")


def _raw(payload: Bytes) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def _header(value: object) -> Optional[str]:
    """A header value as text, or None when it is not one."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _timestamp(value: object) -> Optional[Tuple[str, int]]:
    """The timestamp as signed (text) and as seconds, or None when it is not whole seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value), value
    text = _header(value)
    if text is None or not _DIGITS.fullmatch(text):
        return None
    return text, int(text)


def _standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError("the whsec_ secret is not valid base64") from e
    return secret.encode()


def verify_signature(payload: Bytes, signature: str, secret: str, *, msg_id: Optional[str] = None,
                     timestamp: Optional[Union[str, int]] = None, tolerance: Optional[int] = 300) -> bool:
    body = _raw(payload)
    signature = _header(signature)
    if signature is None:
        return False
    if signature.startswith("sha256="):
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.encode("utf-8", "surrogatepass"), expected.encode())
    msg_id = _header(msg_id)
    ts = _timestamp(timestamp)
    if msg_id is None or ts is None:
        return False
    ts_text, ts_seconds = ts
    if tolerance is not None and abs(int(time.time()) - ts_seconds) > tolerance:
        return False
    signed = f"{msg_id}.{ts_text}.".encode("utf-8", "surrogatepass") + body
    expected = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    for part in signature.split():
        version, _, sig = part.partition(",")
        if version != "v1":
            continue
        try:
            got = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(got, expected):
            return True
    return False
