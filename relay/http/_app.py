"""The Quart-Trio app: hooks for request ids, logs, CORS, metrics and errors."""

from __future__ import annotations

import structlog
import trio
from quart import Quart, g, request
from quart_trio import QuartTrio
from quart_trio.wrappers.response import TrioResponse as Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..auth import origin_allowed
from ..errors import Refused
from ..obs import CONTENT_TYPE, request_id_from
from ..services import Services
from ..store import StoreUnavailable
from ._account_routes import register_account_routes
from ._auth_routes import register_auth_routes
from ._errors import ApiError, api_error, error_response, json_response
from ._keys_routes import register_keys_routes
from ._openapi import register_openapi_route

_CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID"
_CORS_EXPOSE_HEADERS = "X-Request-ID, Retry-After"
_CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
_UNREAD_BODY = frozenset({408, 413})  # statuses answered before the body was read


def create_app(services: Services) -> Quart:
    """The HTTP API over *services*; no global state, one app per Services."""
    app = QuartTrio("relay", static_folder=None)  # no file serving, no /static route
    app.config["MAX_CONTENT_LENGTH"] = services.config.http.max_body_bytes
    app.config["BODY_TIMEOUT"] = services.config.http.request_timeout  # then 408, closed
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    _install_hooks(app, services)
    _install_error_handlers(app, services)
    _register_health(app, services)
    register_auth_routes(app, services)
    register_account_routes(app, services)
    register_keys_routes(app, services)
    register_openapi_route(app, services)
    return app


def _install_hooks(app: Quart, services: Services) -> None:
    allowed = services.config.ws.allowed_origins

    @app.before_request
    async def start() -> Response | None:
        g.request_id = request_id_from(request.headers.get("X-Request-ID"))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)
        if request.method == "OPTIONS":
            return Response(status=204)  # preflight; CORS headers added below
        return None

    @app.after_request
    async def finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", None) or request_id_from(None)
        origin = request.headers.get("Origin")
        if origin is not None and origin_allowed(origin, allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSE_HEADERS
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = _CORS_METHODS
                response.headers["Access-Control-Allow-Headers"] = _CORS_ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        response.vary.add("Origin")
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        services.metrics.http_requests.labels(rule, str(response.status_code)).inc()
        return response

    @app.teardown_request
    async def forget(_: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()


def _install_error_handlers(app: Quart, services: Services) -> None:
    @app.errorhandler(ApiError)
    async def http_refusal(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = {
            400: "bad_request",
            404: "not_found",
            408: "request_timeout",
            405: "method_not_allowed",
            413: "body_too_large",
        }.get(status, "http_error")
        response = error_response(ApiError(status, code, error.description or error.name))
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))  # RFC 9110
        if status in _UNREAD_BODY:
            # The body was never read to its end, so the next request on this
            # connection cannot be parsed: say so, and let the server close it.
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Refused)
    async def refused(error: Refused) -> Response:
        if isinstance(error, StoreUnavailable):
            services.log.error("http.store_unavailable", detail=error.detail)
        return error_response(api_error(error))

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        if isinstance(error, trio.Cancelled):  # never swallow cancellation
            raise error
        services.log.error("http.internal_error", exc_info=error)
        return error_response(ApiError(500, "internal_error", "internal server error"))


def _register_health(app: Quart, services: Services) -> None:
    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        checks = {
            "store": services.store.ping,
            "bus": services.bus.ping,
            "limits": services.limits.ping,
        }
        status: dict[str, str] = {}
        for name, ping in checks.items():
            try:
                with trio.fail_after(2):
                    await ping()
                status[name] = "ok"
            except Exception:  # any failure means "not ready"; say which part
                services.log.warning(f"health.{name}_unreachable", exc_info=True)
                status[name] = "unreachable"
        ready = all(value == "ok" for value in status.values())
        return json_response(
            {"status": "ready" if ready else "unavailable", **status}, 200 if ready else 503
        )

    if services.config.http.metrics:

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(services.metrics.render(), content_type=CONTENT_TYPE)
