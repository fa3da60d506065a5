"""Failures as exceptions: one base with an HTTP status and a public reason.

``reason`` and ``title`` are safe for clients; ``detail`` goes to the log
only. :func:`gateway.pipeline.responses.error_response` renders them.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base: ``status`` and ``reason`` are public, ``detail`` is private."""

    status = 500
    reason = "internal_error"
    title = "Internal error"
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()  # extra public headers on the answer

    def __init__(self, detail: str = "", *, reason: str | None = None, public: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        self.detail = detail
        self.public = public
        super().__init__(detail or self.reason)


class BadRequest(GatewayError):
    status, reason, title = 400, "bad_request", "Bad request"


class Unauthorized(GatewayError):
    status, reason, title = 401, "unauthorized", "Credentials rejected"


class Forbidden(GatewayError):
    status, reason, title = 403, "forbidden", "Forbidden"


class MethodNotAllowed(GatewayError):
    """CONNECT (authority-form): popgate proxies requests, it does not tunnel."""

    status, reason, title = 405, "method_not_allowed", "Method not allowed"
    allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


class PayloadTooLarge(GatewayError):
    status, reason, title = 413, "body_too_large", "Request body too large"


class BodyTimeout(GatewayError):
    status, reason, title = 408, "body_timeout", "Request body not received in time"


class HeadersTooLarge(GatewayError):
    status, reason, title = 431, "headers_too_large", "Request header fields too large"


class UpstreamUnreachable(GatewayError):
    status, reason, title = 502, "upstream_unreachable", "Upstream unreachable"


class UpstreamTimeout(GatewayError):
    status, reason, title = 504, "upstream_timeout", "Upstream timed out"


class Overloaded(GatewayError):
    status, reason, title = 503, "overloaded", "Temporarily overloaded"

    def __init__(self, detail: str = "", *, retry_after: float = 1.0, reason: str | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.retry_after = retry_after


class StoreFailure(GatewayError):
    """The store is unreachable and this action fails closed."""

    status, reason, title = 503, "store_unavailable", "Temporarily unavailable"
    retry_after = 2.0


class Answered(GatewayError):
    """popgate answers the request itself (no origin call): ``response`` is
    sent as is, e.g. a batch-settlement refund acknowledgement."""

    status, reason, title = 200, "answered", "Answered by the gateway"

    def __init__(self, response: object, detail: str = "") -> None:
        super().__init__(detail)
        self.response = response
