"""The HTTP side of ``emotion-lightning serve``: one ASGI app that reads each request once, by one rule.

Every request is judged in the same order before anything else looks at it: the headers the server reads
(``Host``, ``Content-Type``, ``Content-Length``, ``X-API-Key``, ``Origin``) must each come once; ``Host`` must
name this server (a web page on another site cannot reach a local server through DNS rebinding); the API key,
when one is set, is compared in constant time on every route but the page and ``/health``; a prediction must
say ``Content-Type: application/json`` (a form or ``text/plain`` body, which any web page may send without
asking, is refused) and its body is read against a size limit and a deadline, decoded as UTF-8 JSON with no
repeated key, and checked text by text. Only then are its texts queued for the model, so that no request can
fail a batch it would have joined.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from emotion_lightning.serve.openapi import API_KEY_HEADER, API_PATH, REQUEST_FIELDS, openapi_document
from emotion_lightning.serve.workers import ModelWorkers, WorkerUnavailable
from emotion_lightning.sources import text_problem

STATIC = resources.files("emotion_lightning") / "static"
# The headers this server reads: a request that repeats one is refused rather than read one way here and
# another way elsewhere.
KEY_HEADER = API_KEY_HEADER.lower().encode()
SINGLE_HEADERS = (b"host", b"content-type", b"content-length", b"transfer-encoding", KEY_HEADER, b"origin")
DOCS_ASSETS = {"/docs/swagger-ui.css": "text/css", "/docs/swagger-ui-bundle.js": "text/javascript"}
# Every path the server answers, and the methods it answers there.
ROUTES = {
    "/": ("GET", "HEAD"),
    "/health": ("GET", "HEAD"),
    API_PATH: ("POST",),
    "/info": ("GET", "HEAD"),
    "/openapi.json": ("GET", "HEAD"),
    "/docs": ("GET", "HEAD"),
    **{asset: ("GET", "HEAD") for asset in DOCS_ASSETS},
}
# The pages anyone may read; every other route needs the API key when one is set.
OPEN_PATHS = ("/", "/health")
USAGE = 'send {"text": "..."} or {"texts": ["...", ...]}'


class Refused(Exception):
    """A request answered with ``status`` and a ``detail`` message instead of what it asked for (and ``headers``,
    such as the ``Allow`` a 405 must carry)."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()):
        super().__init__(message)
        self.status, self.headers = status, list(headers)


@dataclass(frozen=True)
class TextsToClassify:
    """One request's texts; ``single`` when it gave one ``text`` (and is answered with one object)."""

    texts: list[str]
    single: bool


def read_request(payload: object, max_texts: int) -> TextsToClassify:
    """``{"text": "..."}`` or ``{"texts": [...]}``, or :class:`Refused` saying what is wrong."""
    if not isinstance(payload, dict):
        raise Refused(422, f"the body must be a JSON object: {USAGE}")
    if len(payload) != 1 or next(iter(payload)) not in REQUEST_FIELDS:
        raise Refused(422, f"unexpected fields {sorted(payload)}: {USAGE}")
    single = "text" in payload
    texts = [payload["text"]] if single else payload["texts"]
    if not isinstance(texts, list) or not texts:
        raise Refused(422, '"texts" must be a list of at least one string')
    if len(texts) > max_texts:
        raise Refused(413, f'"texts" holds {len(texts)} texts; this server takes at most {max_texts} a request')
    for position, text in enumerate(texts):
        if problem := text_problem(text):
            where = '"text"' if single else f'"texts"[{position}]'
            raise Refused(422, f"{where}: {problem}")
    return TextsToClassify(texts, single)


def parse_json(body: bytes) -> object:
    """The body as JSON: UTF-8 only, standard JSON only, no key given twice in an object (Python would keep the
    last; another reader the first)."""

    def no_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in pairs]
        if repeated := sorted({key for key in keys if keys.count(key) > 1}):
            raise Refused(400, f"the body gives {', '.join(map(repr, repeated))} more than once")
        return dict(pairs)

    def not_json(name: str):  # Python reads NaN and Infinity, which JSON does not have
        raise Refused(400, f"the body is not JSON ({name} is not a JSON value)")

    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=no_repeated_keys, parse_constant=not_json)
    except UnicodeDecodeError as error:
        raise Refused(400, f"the body is not UTF-8 ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise Refused(400, f"the body is not JSON ({error})") from None
    except (ValueError, RecursionError, MemoryError) as error:
        # What Python's reader refuses to hold, JSON or not: nesting past its recursion limit, a number of more digits
        # than int() converts (sys.get_int_max_str_digits). The body's fault, never the server's: never a 500.
        raise Refused(400, f"the body is not JSON this server reads ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class Rules:
    """What the server accepts. ``allowed_hosts`` None: any Host; ``api_key`` None: no key needed."""

    max_texts: int
    max_body_bytes: int
    read_timeout: float
    api_key: bytes | None
    allowed_hosts: frozenset[str] | None
    cors_origins: frozenset[str]  # the Origin values a browser may call this server from


class ServeApp:
    """The ASGI app: the page at ``/``, ``/health``, ``/info``, ``/openapi.json``, ``/docs`` and ``POST /predict``."""

    def __init__(self, workers: ModelWorkers, rules: Rules, info: dict):
        self.workers, self.rules = workers, rules
        self.info = json.dumps(info).encode()
        self.page = (STATIC / "index.html").read_bytes()
        self.openapi = json.dumps(openapi_document(rules.max_texts)).encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # no WebSockets, and the app has no start-up or shut-down of its own
            return
        origin, extra = None, []
        try:
            headers = _single_headers(scope["headers"])
            self._check_host(headers.get(b"host"))
            origin = headers.get(b"origin")
            origin = origin if origin is not None and origin.decode("latin-1") in self.rules.cors_origins else None
            status, body, content_type = await self._route(scope, headers, receive)
        except Refused as refused:
            status, body, content_type = refused.status, _detail(str(refused)), "application/json"
            extra = refused.headers
        if origin is not None:
            extra += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
            if scope["method"] == "OPTIONS":
                extra += [
                    (b"access-control-allow-methods", b"GET, POST"),
                    (b"access-control-allow-headers", f"Content-Type, {API_KEY_HEADER}".encode()),
                    (b"access-control-max-age", b"600"),
                ]
        await _respond(send, status, body, content_type, extra, head=scope["method"] == "HEAD")

    def _check_host(self, host: bytes | None) -> None:
        if host is None:
            raise Refused(400, "the request has no Host header")
        name = host.decode("latin-1").lower()
        name = name.rpartition(":")[0] if name.rpartition(":")[2].isdigit() else name  # the port
        if self.rules.allowed_hosts is not None and name not in self.rules.allowed_hosts:
            raise Refused(421, f"this server does not answer for the Host {name!r} (see serve --allowed_hosts)")

    async def _route(self, scope, headers: dict[bytes, bytes], receive) -> tuple[int, bytes, str]:
        path, method = scope["path"], scope["method"]
        if method == "OPTIONS" and b"origin" in headers:  # a browser asking whether it may: CORS says
            return 204, b"", "text/plain"
        if path not in OPEN_PATHS:
            self._check_key(headers.get(KEY_HEADER))  # before saying which paths exist
        if path not in ROUTES:
            raise Refused(404, f"no such page: {path}")
        if method not in ROUTES[path]:
            allowed = ", ".join(ROUTES[path])
            raise Refused(405, f"{method} is not answered at {path}; use {allowed}", [(b"allow", allowed.encode())])
        if path == "/":
            return 200, self.page, "text/html; charset=utf-8"
        if path == "/health":
            return (200, b"ok", "text/plain") if self.workers.ready else (503, b"not ready", "text/plain")
        if path == API_PATH:
            return await self._predict(headers, receive)
        if path == "/info":
            return 200, self.info, "application/json"
        if path == "/openapi.json":
            return 200, self.openapi, "application/json"
        return _docs(path)

    def _check_key(self, given: bytes | None) -> None:
        key = self.rules.api_key
        if key is not None and (given is None or not hmac.compare_digest(given, key)):
            raise Refused(401, f"this server needs its API key in the header {API_KEY_HEADER}")

    async def _predict(self, headers: dict[bytes, bytes], receive) -> tuple[int, bytes, str]:
        media_type, _, parameters = headers.get(b"content-type", b"").decode("latin-1").partition(";")
        charset = parameters.strip().lower().removeprefix("charset=").strip('"') if parameters.strip() else "utf-8"
        if media_type.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
            raise Refused(415, "send the body as JSON, with the header Content-Type: application/json")
        body = await self._read_body(headers, receive)
        request = read_request(parse_json(body), self.rules.max_texts)
        try:
            predictions = await self.workers.predict(request.texts)
        except WorkerUnavailable as unavailable:
            raise Refused(503, str(unavailable)) from None
        except RuntimeError as failed:  # the model failed on this request alone (a bug): its message
            raise Refused(500, str(failed)) from None
        answer = predictions[0] if request.single else {"predictions": predictions}
        return 200, json.dumps(answer).encode(), "application/json"

    async def _read_body(self, headers: dict[bytes, bytes], receive) -> bytes:
        limit = self.rules.max_body_bytes
        too_large = Refused(413, f"the body is larger than this server takes ({limit:,} bytes)")
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            raise Refused(400, "the Content-Length header is not a number")
        if int(declared) > limit:
            raise too_large
        body = bytearray()
        deadline = asyncio.get_running_loop().time() + self.rules.read_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                raise Refused(408, f"the body did not arrive within {self.rules.read_timeout:g} s") from None
            if message["type"] == "http.disconnect":
                raise Refused(400, "the client went away before sending the whole body")
            body += message.get("body", b"")
            if len(body) > limit:
                raise too_large
            if not message.get("more_body"):
                return bytes(body)


def _docs(path: str) -> tuple[int, bytes, str]:
    """The API's page (Swagger UI) and its two assets, from the swagger-ui-bundle package: nothing from a CDN."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        raise Refused(404, "the API page needs swagger-ui-bundle: pip install 'emotion-lightning[serve]'") from None
    if path == "/docs":
        return 200, (STATIC / "docs.html").read_bytes(), "text/html; charset=utf-8"
    return 200, (swagger_ui_path / path.removeprefix("/docs/")).read_bytes(), DOCS_ASSETS[path]


def _single_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in headers and name in SINGLE_HEADERS:
            raise Refused(400, f"the header {name.decode()} is given more than once")
        headers.setdefault(name, value)
    return headers


def _detail(message: str) -> bytes:
    return json.dumps({"detail": message}).encode()


async def _respond(send, status: int, body: bytes, content_type: str, extra: list, head: bool = False) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
