"""Python SDK for Aragora.

    from aragora import AragonaClient
    client = AragonaClient(api_token="ara_…")
    templates = client.marketplace.list_templates(category="workflow")
"""

from .client import AragonaClient, AragoraClient, AsyncAragoraClient
from .errors import (AragoraError, AuthenticationError, ConflictError, NotFoundError, PermissionDeniedError,
                     RateLimitError, ServerError, ValidationError)
from .webhooks import verify_signature

__all__ = [
    "AragonaClient", "AragoraClient", "AsyncAragoraClient", "AragoraError", "AuthenticationError",
    "ConflictError", "NotFoundError", "PermissionDeniedError", "RateLimitError", "ServerError",
    "ValidationError", "verify_signature",
]
__version__ = "0.1.0"
