"""Exceptions raised by the SDK. Every API error carries the HTTP status and the server's error code."""

from __future__ import annotations

from typing import Any, Optional


class AragoraError(Exception):
    """An error answered by the server (or a transport failure when ``status`` is 0)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 retry_after: Optional[float] = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @property
    def field(self) -> Optional[str]:
        """The offending field for validation errors (422)."""
        if isinstance(self.details, dict):
            return self.details.get("field")
        return None


class AuthenticationError(AragoraError):
    """401: missing, invalid or revoked token."""


class PermissionDeniedError(AragoraError):
    """403: the token lacks the permission."""


class NotFoundError(AragoraError):
    """404: missing, or not visible to this token's workspace."""


class ConflictError(AragoraError):
    """409: conflicting state, e.g. a duplicate id."""


class ValidationError(AragoraError):
    """400/422: malformed request or a bad field (see ``field``)."""


class RateLimitError(AragoraError):
    """429: slow down; ``retry_after`` seconds."""


class ServerError(AragoraError):
    """5xx."""


def error_for(status: int, body: Any, retry_after: Optional[float] = None) -> AragoraError:
    err = body.get("error") if isinstance(body, dict) else None
    code = (err or {}).get("code", "http_error")
    message = (err or {}).get("message", str(body)[:200] if body else "")
    details = (err or {}).get("details")
    cls = {
        401: AuthenticationError,
        403: PermissionDeniedError,
        404: NotFoundError,
        409: ConflictError,
        400: ValidationError,
        413: ValidationError,
        422: ValidationError,
        429: RateLimitError,
    }.get(status, ServerError if status >= 500 else AragoraError)
    return cls(status, code, message, details, retry_after)
