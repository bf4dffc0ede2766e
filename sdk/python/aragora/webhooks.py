"""Helpers for webhook receivers: verify Aragora's signatures.

``verify_signature(payload, signature, secret)`` accepts either header:
- ``X-Signature-SHA256: sha256=<hex>`` (HMAC-SHA256 of the raw body with the secret's UTF-8 bytes,
  exactly the guide's verifier), or
- ``webhook-signature: v1,<base64> …`` (Standard Webhooks); then pass ``msg_id`` and ``timestamp``
  from the ``webhook-id`` and ``webhook-timestamp`` headers. ``whsec_`` secrets are base64-decoded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Optional, Union

Bytes = Union[bytes, bytearray, str]


def _raw(payload: Bytes) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def _standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def verify_signature(payload: Bytes, signature: str, secret: str, *, msg_id: Optional[str] = None,
                     timestamp: Optional[Union[str, int]] = None, tolerance: Optional[int] = 300) -> bool:
    body = _raw(payload)
    if signature is None:
        return False
    if signature.startswith("sha256="):
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature, expected)
    if msg_id is None or timestamp is None:
        return False
    if tolerance is not None and abs(time.time() - int(timestamp)) > tolerance:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()).decode()
    for part in signature.split():
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False
