"""The auditor's admin API (stdlib ``ThreadingHTTPServer``, default ``127.0.0.1:3001``).

Every ``/admin/`` endpoint, reads included, needs ``Authorization: Bearer <token>``: the reports hold query
text and the recommendations the schema, which is more than an unauthenticated caller on the host should see.
With no token configured every ``/admin/`` call is refused (403): the API never runs open. ``/healthz``,
``/readyz`` and ``/openapi.json`` are open, as liveness and readiness probes cannot carry secrets.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from pg_architect.auditor import lifecycle
from pg_architect.auditor.audit import AuditOptions
from pg_architect.auditor.delivery import html, weekly
from pg_architect.auditor.delivery.after_audit import api_base_url
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.lifecycle import DECISIONS, STATUSES, LifecycleError
from pg_architect.auditor.report import render
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import AuditAlreadyRunning, DatabaseError, PgArchitectError, redact
from pg_architect.core.httpserver import HardenedHTTPServer, TimeoutHandler

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
SOCKET_TIMEOUT_S = 10.0
MAX_PAGE = 500
DEFAULT_PAGE = 50
REPORT_FORMATS = ("json", "markdown", "html")
_RUN_PATH = re.compile(r"^/admin/database/runs/(?P<id>[^/]+)$")
_DECISION_PATH = re.compile(r"^/admin/database/optimizations/(?P<id>[^/]+)/decision$")
MAX_REASON = 2000


class AuditStarter(Protocol):
    """Starts an audit in the background; returns its run id once known (None if not known in time).

    Raises AuditAlreadyRunning when an audit is running, here or in another process.
    """

    def start(self, options: AuditOptions) -> str | None: ...


class Html(str):
    """A page to answer as ``text/html``."""


def wants_html(accept: str | None) -> bool:
    """Whether the client asks for HTML before JSON (a browser does; curl and scripts do not)."""
    best: tuple[float, int] = (0.0, 0)
    choice = ""
    for i, part in enumerate((accept or "").split(",")):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if kind in ("text/html", "application/json", "text/markdown") and (q, -i) > best:
            best, choice = (q, -i), kind
    return choice == "text/html"


class HttpError(Exception):
    """Answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# -- request validation (pure) -----------------------------------------------------------------------------


def audit_overrides(body: bytes) -> dict[str, Any]:
    """The optional JSON body of run-audit, validated; raises HttpError(400) listing every problem."""
    if not body.strip():
        return {}
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise HttpError(400, "the body must be a JSON object")
    problems = [f"unknown field {key!r}" for key in sorted(doc) if key not in _FIELDS]
    values: dict[str, Any] = {}
    for key, check in _FIELDS.items():
        if key in doc and doc[key] is not None:
            problem = check(doc[key])
            if problem:
                problems.append(f"{key}: {problem}")
            else:
                values[key] = doc[key]
    if problems:
        raise HttpError(400, "; ".join(problems))
    return values


def parse_json(body: bytes) -> Any:
    """A request body as JSON; HttpError(400) for invalid JSON or nesting deeper than MAX_JSON_DEPTH.

    The depth is measured before parsing: the stdlib parser recurses once per level, and ``"[" * 60000``
    (well inside the body limit) would end in a RecursionError.
    """
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise HttpError(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HttpError(400, f"the body is not valid JSON: {str(exc)[:200]}") from exc


def json_depth(body: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _int_at_least(low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {json.dumps(value)}"
        return None if value >= low else f"must be >= {low}, got {value}"

    return check


def _non_negative_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {json.dumps(value)}"
    return None if value >= 0 else f"must be >= 0, got {value}"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {json.dumps(value)}"


_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "min_calls": _int_at_least(1),
    "min_mean_ms": _non_negative_number,
    "limit": _int_at_least(1),
    "dry_run": _boolean,
}


def decision_body(body: bytes) -> tuple[str, str | None, str | None]:
    """``(decision, reason, by)`` from a decision's JSON body; HttpError(400) listing every problem."""
    try:
        doc = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise HttpError(400, 'the body must be a JSON object: {"decision": "accepted|rejected", "reason": "..."}')
    problems = [f"unknown field {key!r}" for key in sorted(doc) if key not in ("decision", "reason", "by")]
    decision = doc.get("decision")
    if decision not in DECISIONS:
        problems.append(f"decision: must be one of {', '.join(DECISIONS)}, got {json.dumps(decision)}")
    for key in ("reason", "by"):
        value = doc.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_REASON):
            problems.append(f"{key}: expected a string of at most {MAX_REASON} characters")
    if problems:
        raise HttpError(400, "; ".join(problems))
    return str(decision), doc.get("reason"), doc.get("by")


def page(query: dict[str, list[str]]) -> tuple[int, int]:
    """``limit`` (1..500, default 50) and ``offset`` (>= 0) from a query string; HttpError(400) otherwise."""
    limit = _query_int(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = _query_int(query, "offset", 0, 0, None)
    return limit, offset


def _query_int(query: dict[str, list[str]], name: str, default: int, low: int, high: int | None) -> int:
    values = query.get(name)
    if not values:
        return default
    text = values[-1]
    if not re.fullmatch(r"\d{1,9}", text):
        raise HttpError(400, f"{name} must be a non-negative integer, got {text!r}")
    value = int(text)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise HttpError(400, f"{name} must be {bound}, got {value}")
    return value


def authorize(header: str | None, token: str | None) -> None:
    """Raise HttpError unless ``header`` is ``Bearer <token>``; compared in constant time."""
    if not token:
        raise HttpError(
            403,
            "the admin API is disabled: no API token is configured "
            "(set auditor.api.token_file or PG_ARCHITECT_API_TOKEN)",
        )
    challenge = {"WWW-Authenticate": 'Bearer realm="pg-architect"'}
    scheme, _, offered = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        raise HttpError(401, "missing bearer token (Authorization: Bearer <token>)", challenge)
    if not hmac.compare_digest(offered.strip().encode(), token.encode()):
        raise HttpError(401, "invalid bearer token", challenge)


# -- the server ----------------------------------------------------------------------------------------------


class AdminServer(HardenedHTTPServer):
    """Backlog, socket timeouts and a bound on concurrent requests from core.httpserver."""

    def __init__(self, address: tuple[str, int], cfg: Config, kb_dsn: str, starter: AuditStarter) -> None:
        self.cfg = cfg
        self.kb_dsn = kb_dsn
        self.starter = starter
        self.token = cfg.secret("api_token")
        super().__init__(address, _Handler)

    def open_kb(self) -> KnowledgeBase:
        """A short-lived knowledge-base session for one request (the daemon migrated the schema on start)."""
        return KnowledgeBase.open(self.kb_dsn, self.cfg, role=db.Role.API, migrate=False)


class _Handler(TimeoutHandler):
    server: AdminServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query, keep_blank_values=True)
        self._body_read = False
        try:
            if path.startswith("/admin/"):
                # Authenticate before reading a byte of body: an anonymous client cannot make us wait for
                # (or buffer) a body it may never finish sending.
                authorize(self.headers.get("Authorization"), self.server.token)
            body = self._body()
            status, doc, headers = self._route(method, path, query, body)
        except HttpError as exc:
            status, doc, headers = exc.status, {"error": exc.message}, exc.headers
            if not self._body_read:
                self.close_connection = True  # an unread body would be taken for the next request
        except AuditAlreadyRunning as exc:
            status, doc, headers = 409, {"error": redact(str(exc))}, {}
        except DatabaseError as exc:
            status, doc, headers = 503, {"error": f"knowledge base unavailable: {redact(str(exc))}"}, {}
        except PgArchitectError as exc:
            status, doc, headers = 500, {"error": redact(str(exc))}, {}
        except Exception:
            log.exception("admin API: %s %s failed", method, path)
            status, doc, headers = 500, {"error": "internal error (see the daemon's log)"}, {}
        if isinstance(doc, Html):
            self._send(status, doc.encode(), "text/html; charset=utf-8", {**headers, "Vary": "Accept"})
        elif isinstance(doc, str):
            self._send(status, doc.encode(), "text/markdown; charset=utf-8", headers)
        else:
            self._send(status, json.dumps(doc, default=str).encode(), "application/json", headers)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        if path in ("/healthz", "/readyz", "/openapi.json"):
            if method != "GET":
                raise HttpError(405, f"{method} is not allowed on {path}", {"Allow": "GET"})
            if path == "/healthz":
                return 200, {"status": "ok"}, {}
            if path == "/readyz":
                return self._ready()
            return 200, OPENAPI, {}
        run = _RUN_PATH.match(path)
        decision = _DECISION_PATH.match(path)
        routes = {
            "/admin/database/run-audit": "POST",
            "/admin/database/optimizations": "GET",
            "/admin/database/report": "GET",
        }
        allowed = "GET" if run else "POST" if decision else routes.get(path)
        if allowed is None:
            raise HttpError(404, f"no such endpoint: {path}")
        authorize(self.headers.get("Authorization"), self.server.token)
        if method != allowed:
            raise HttpError(405, f"{method} is not allowed on {path}", {"Allow": allowed})
        if run:
            return self._run(run.group("id"))
        if decision:
            return self._decision(decision.group("id"), body)
        if path == "/admin/database/run-audit":
            return self._run_audit(body)
        if path == "/admin/database/optimizations":
            return self._optimizations(query)
        return self._report(query)

    # -- endpoints -----------------------------------------------------------------------------------------

    def _ready(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            kb = self.server.open_kb()
            try:
                migrated = kb.schema_ready()
            finally:
                kb.close()
        except DatabaseError as exc:
            # The reason (a socket path, a role, a host) is for the operator's log, not for any caller.
            log.warning("readyz: knowledge base unreachable: %s", redact(str(exc)))
            return 503, {"status": "unavailable", "error": "knowledge base unreachable"}, {}
        if not migrated:
            return 503, {"status": "unavailable", "error": "knowledge base schema pgarch is not there yet"}, {}
        return 200, {"status": "ready"}, {}

    def _run_audit(self, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        overrides = audit_overrides(body)
        options = AuditOptions.from_config(self.server.cfg, trigger="api", **overrides)
        run_id = self.server.starter.start(options)
        if run_id is None:
            return 202, {"run_id": None, "status": "starting", "detail": "the run id is not known yet"}, {}
        location = f"/admin/database/runs/{run_id}"
        return 202, {"run_id": run_id, "status": "running", "location": location}, {"Location": location}

    def _run(self, run_id: str) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        try:
            canonical = str(uuid.UUID(run_id))
        except ValueError as exc:
            raise HttpError(400, f"malformed run id {run_id[:64]!r}: expected a UUID") from exc
        kb = self.server.open_kb()
        try:
            doc = kb.run_report(canonical)
        finally:
            kb.close()
        if doc is None:
            raise HttpError(404, f"no audit run {canonical}")
        if wants_html(self.headers.get("Accept")):
            return 200, Html(html.run_page(doc)), {}
        return 200, doc, {}

    def _optimizations(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any], dict[str, str]]:
        limit, offset = page(query)
        statuses = query.get("status")
        status = statuses[-1] if statuses else None
        if status is not None and status not in STATUSES:
            raise HttpError(400, f"status must be one of {', '.join(STATUSES)}, got {status[:32]!r}")
        kb = self.server.open_kb()
        try:
            rows = kb.optimizations(limit, offset, status)
        finally:
            kb.close()
        return 200, {"limit": limit, "offset": offset, "status": status, "items": [r.as_json() for r in rows]}, {}

    def _decision(self, raw_id: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        text = raw_id.removeprefix("%23").removeprefix("#")
        if not re.fullmatch(r"[1-9]\d{0,17}", text):
            raise HttpError(400, f"malformed recommendation id {raw_id[:32]!r}: expected a positive integer")
        decision, reason, by = decision_body(body)
        # The bearer token is shared, so who decided is what the caller says, marked as coming through the API.
        actor = f"api:{by}" if by else "api"
        kb = self.server.open_kb()
        try:
            try:
                updated = lifecycle.decide(kb, int(text), decision, actor, reason)
            except LifecycleError as exc:
                status = 404 if str(exc).startswith("no recommendation") else 409
                raise HttpError(status, str(exc)) from exc
            events = kb.events(updated.recommendation_id)
        finally:
            kb.close()
        log.info("recommendation #%d %s by %s through the admin API", updated.recommendation_id, decision, actor)
        return 200, {**updated.as_json(), "events": [e.as_json() for e in events]}, {}

    def _report(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        default = "html" if wants_html(self.headers.get("Accept")) else "json"
        fmt = (query.get("format") or [default])[-1]
        if fmt not in REPORT_FORMATS:
            raise HttpError(400, f"format must be one of {', '.join(REPORT_FORMATS)}, got {fmt[:32]!r}")
        kb = self.server.open_kb()
        try:
            if fmt == "html":  # the page has a state even before the first audit: "no audit yet"
                page = html.weekly_page(weekly.build(kb, api_base_url(self.server.cfg) + "/admin/database/report"))
                return 200, Html(page), {}
            doc = kb.latest_report("ok")
        finally:
            kb.close()
        if doc is None:
            raise HttpError(404, "no successful audit yet")
        return 200, (doc if fmt == "json" else render(doc, "markdown")), {}

    # -- plumbing ------------------------------------------------------------------------------------------

    _body_read = False

    def _body(self) -> bytes:
        self._body_read = False
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HttpError(411, "send the body with a Content-Length (chunked bodies are not accepted)")
        length = self.headers.get("Content-Length")
        if not length:
            self._body_read = True
            return b""
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise HttpError(413 if length.isdigit() else 400, f"the body must be at most {MAX_BODY_BYTES} bytes")
        try:
            body = self.read_body(int(length))
        except (TimeoutError, ConnectionError) as exc:
            self.close_connection = True
            raise HttpError(408, "the body did not arrive in time") from exc
        self._body_read = True
        return body

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the Authorization header is never logged
        log.debug("%s - %s", self.address_string(), format % args)


# -- OpenAPI ---------------------------------------------------------------------------------------------------


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


_ERR = "#/components/schemas/Error"
_AUTH_ERRORS = {
    "401": _json(_ERR, "missing or wrong bearer token"),
    "403": _json(_ERR, "no API token is configured: the admin API is disabled"),
    "503": _json(_ERR, "the knowledge base is unavailable"),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "pg-architect auditor admin API",
        "version": "1",
        "description": "Run audits and read their results. /admin/ endpoints need a bearer token.",
    },
    "servers": [{"url": "http://127.0.0.1:3001"}],
    "security": [{"bearer": []}],
    "paths": {
        "/admin/database/run-audit": {
            "post": {
                "summary": "Start an audit in the background",
                "operationId": "runAudit",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditRequest"}}},
                },
                "responses": {
                    "202": {
                        "description": "started; poll the Location",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditStarted"}}},
                    },
                    "400": _json(_ERR, "invalid body"),
                    "409": _json(_ERR, "an audit is already running"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/admin/database/runs/{id}": {
            "get": {
                "summary": "One audit run's report",
                "operationId": "getRun",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
                ],
                "responses": {
                    "200": {
                        "description": "the run's report (status running|ok|failed); HTML with Accept: text/html",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/AuditReport"}},
                            "text/html": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _json(_ERR, "malformed run id"),
                    "404": _json(_ERR, "no such run"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/admin/database/optimizations": {
            "get": {
                "summary": "Recommendations, newest first",
                "operationId": "listOptimizations",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
                    },
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                ],
                "responses": {
                    "200": _json("#/components/schemas/OptimizationPage", "one page of recommendations"),
                    "400": _json(_ERR, "invalid limit, offset or status"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/admin/database/optimizations/{id}/decision": {
            "post": {
                "summary": "A person's decision on a recommendation, recorded with who, when and why",
                "operationId": "decideOptimization",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Decision"}}},
                },
                "responses": {
                    "200": _json("#/components/schemas/DecidedOptimization", "the recommendation after the decision"),
                    "400": _json(_ERR, "invalid id or body"),
                    "404": _json(_ERR, "no such recommendation"),
                    "409": _json(_ERR, "the decision does not apply to the recommendation's status"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/admin/database/report": {
            "get": {
                "summary": "The latest successful audit's report",
                "operationId": "getReport",
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(REPORT_FORMATS), "default": "json"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the report",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/AuditReport"}},
                            "text/markdown": {"schema": {"type": "string"}},
                            "text/html": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _json(_ERR, "unknown format"),
                    "404": _json(_ERR, "no successful audit yet"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers",
                "operationId": "healthz",
                "security": [],
                "responses": {"200": _json("#/components/schemas/Status", "alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the knowledge base is reachable",
                "operationId": "readyz",
                "security": [],
                "responses": {
                    "200": _json("#/components/schemas/Status", "ready"),
                    "503": _json("#/components/schemas/Status", "not ready, with the reason"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.0 document", "content": {"application/json": {}}}},
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Status": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string"}, "error": {"type": "string"}},
            },
            "AuditRequest": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "min_calls": {"type": "integer", "minimum": 1},
                    "min_mean_ms": {"type": "number", "minimum": 0},
                    "limit": {"type": "integer", "minimum": 1},
                    "dry_run": {"type": "boolean"},
                },
            },
            "AuditStarted": {
                "type": "object",
                "required": ["run_id", "status"],
                "properties": {
                    "run_id": {"type": "string", "format": "uuid", "nullable": True},
                    "status": {"type": "string", "enum": ["running", "starting"]},
                    "location": {"type": "string"},
                },
            },
            "AuditReport": {
                "type": "object",
                "description": "The audit report of the contract (pg-architect audit --format json).",
                "required": ["run_id", "status"],
                "properties": {
                    "run_id": {"type": "string", "format": "uuid"},
                    "status": {"type": "string", "enum": ["running", "ok", "failed"]},
                    "error": {"type": "string", "nullable": True},
                    "started_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": "string", "format": "date-time", "nullable": True},
                    "window": {"type": "object", "nullable": True},
                    "slow_queries": {"type": "array", "items": {"type": "object"}},
                    "index_health": {"type": "array", "items": {"type": "object"}},
                    "forecasts": {"type": "array", "items": {"type": "object"}},
                    "settings": {"type": "array", "items": {"type": "object"}},
                    "kpis": {"type": "object"},
                },
            },
            "Optimization": {
                "type": "object",
                "properties": {
                    "recommendation_id": {"type": "integer"},
                    "run_id": {"type": "string", "format": "uuid"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "type": {"type": "string"},
                    "sql": {"type": "string"},
                    "rollback_sql": {"type": "string", "nullable": True},
                    "reasoning": {"type": "string"},
                    "confidence": {"type": "number"},
                    "source": {"type": "string", "enum": ["advisor", "llm"]},
                    "gain_percent": {"type": "number", "nullable": True},
                    "worth_applying": {"type": "boolean"},
                    "action": {"type": "string", "enum": ["pr_merge", "pr_review", "log", "flag"]},
                    "pr_url": {"type": "string", "nullable": True},
                    "status": {"type": "string", "enum": [*STATUSES, "not_worth"]},
                    "query": {"type": "string"},
                    "fingerprint": {"type": "string"},
                    "status_changed_at": {"type": "string", "format": "date-time", "nullable": True},
                    "applied_at": {"type": "string", "format": "date-time", "nullable": True},
                    "applied_index": {"type": "string", "nullable": True},
                    "decision": {"type": "string", "enum": list(DECISIONS), "nullable": True},
                    "decided_by": {"type": "string", "nullable": True},
                    "decided_at": {"type": "string", "format": "date-time", "nullable": True},
                    "decision_reason": {"type": "string", "nullable": True},
                    "outcome": {"$ref": "#/components/schemas/Outcome"},
                },
            },
            "Decision": {
                "type": "object",
                "required": ["decision"],
                "additionalProperties": False,
                "properties": {
                    "decision": {"type": "string", "enum": list(DECISIONS)},
                    "reason": {"type": "string", "maxLength": MAX_REASON},
                    "by": {
                        "type": "string",
                        "maxLength": MAX_REASON,
                        "description": "who decides (recorded as api:<by>)",
                    },
                },
            },
            "Outcome": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "result": {"type": "string", "enum": ["improved", "improved_less", "no_change", "regressed"]},
                    "before_mean_ms": {"type": "number"},
                    "after_mean_ms": {"type": "number"},
                    "measured_gain_percent": {"type": "number"},
                    "predicted_gain_percent": {"type": "number", "nullable": True},
                    "time_saved_seconds": {"type": "number"},
                    "provisional": {"type": "boolean"},
                    "verified_at": {"type": "string", "format": "date-time"},
                    "index_dropped_at": {"type": "string", "format": "date-time", "nullable": True},
                    "plan_note": {"type": "string", "nullable": True},
                },
            },
            "Event": {
                "type": "object",
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "from_status": {"type": "string", "nullable": True},
                    "to_status": {"type": "string"},
                    "source": {"type": "string", "enum": ["github", "git", "catalog", "person", "audit"]},
                    "actor": {"type": "string", "nullable": True},
                    "reason": {"type": "string", "nullable": True},
                },
            },
            "DecidedOptimization": {
                "allOf": [
                    {"$ref": "#/components/schemas/Optimization"},
                    {
                        "type": "object",
                        "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}},
                    },
                ]
            },
            "OptimizationPage": {
                "type": "object",
                "required": ["limit", "offset", "items"],
                "properties": {
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "status": {"type": "string", "nullable": True},
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Optimization"}},
                },
            },
        },
    },
}
