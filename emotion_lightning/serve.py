"""Serve a trained model over HTTP: ``emotion-lightning serve MODEL`` (the ``serve`` extra: LitServe).

MODEL is a checkpoint written by ``fit`` or a folder written by ``export``. LitServe runs the model in a worker
process and batches the requests that arrive together; the HTTP side answers the page at ``/`` and checks every
prediction request (size, JSON, fields) before it is queued, so that a bad request gets its own 4xx answer
instead of failing the batch it would have joined.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import multiprocessing
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from emotion_lightning.console import say
from emotion_lightning.errors import EmotionLightningError, check_at_least
from emotion_lightning.sources import text_problem

PAGE = Path(__file__).parent / "static" / "index.html"
API_PATH = "/predict"
# LitServe's own API key: when this variable is set, every route but the page needs the header X-API-Key.
API_KEY_VARIABLE = "LIT_SERVER_API_KEY"
DEFAULT_MAX_TEXTS = 64
DEFAULT_MAX_BODY_BYTES = 1_000_000


class ServeError(EmotionLightningError, ValueError):
    """A serve command that cannot start as asked."""


class BadRequest(Exception):
    """A prediction request answered with ``status`` and ``message`` instead of a prediction."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TextsToClassify:
    """One request's texts; ``single`` when it gave one ``text`` (and is answered with one object)."""

    texts: list[str]
    single: bool

    @classmethod
    def of(cls, payload: dict) -> TextsToClassify:
        """A request body's texts, as ``read_request`` accepts it (the worker reads checked bodies with this)."""
        return cls([payload["text"]], single=True) if "text" in payload else cls(payload["texts"], single=False)


def read_request(payload: object, max_texts: int) -> TextsToClassify:
    """``{"text": "..."}`` or ``{"texts": [...]}``, or a :class:`BadRequest` that says what is wrong."""
    usage = 'send {"text": "..."} or {"texts": ["...", ...]}'
    if not isinstance(payload, dict):
        raise BadRequest(422, f"the body must be a JSON object: {usage}")
    if set(payload) not in ({"text"}, {"texts"}):
        raise BadRequest(422, f"unexpected fields {sorted(payload)}: {usage}")
    if "texts" in payload:
        texts = payload["texts"]
        if not isinstance(texts, list) or not texts:
            raise BadRequest(422, '"texts" must be a list of at least one string')
        if len(texts) > max_texts:
            raise BadRequest(413, f'"texts" holds {len(texts)} texts; this server takes at most {max_texts} a request')
    request = TextsToClassify.of(payload)
    for position, text in enumerate(request.texts):
        if problem := text_problem(text):
            where = '"text"' if request.single else f'"texts"[{position}]'
            raise BadRequest(422, f"{where}: {problem}")
    return request


class RequestGate:
    """ASGI middleware in front of LitServe: serves the page at ``/`` and checks each prediction request.

    Requests that do not carry the API key (when one is set) go on unchecked: LitServe answers them 401.
    """

    def __init__(self, app, *, max_texts: int, max_body_bytes: int, api_key: str | None):
        self.app = app
        self.max_texts = max_texts
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key.encode() if api_key else None
        self.page = PAGE.read_bytes()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            return await _answer(send, 200, self.page, "text/html; charset=utf-8")
        headers = dict(scope["headers"])
        if scope["path"] != API_PATH or scope["method"] != "POST" or not self._authorized(headers):
            return await self.app(scope, receive, send)
        try:
            body = await self._read_body(headers, receive)
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
                raise BadRequest(400, f"the body is not JSON ({error})") from None
            read_request(payload, self.max_texts)
        except BadRequest as error:
            return await _answer(send, error.status, json.dumps({"detail": str(error)}).encode(), "application/json")

        replayed = False

        async def receive_checked_body():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        # Read as JSON whatever the client called it (curl -d says form data).
        as_json = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
        as_json.append((b"content-type", b"application/json"))
        await self.app({**scope, "headers": as_json}, receive_checked_body, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        return self.api_key is None or headers.get(b"x-api-key") == self.api_key

    async def _read_body(self, headers: dict[bytes, bytes], receive) -> bytes:
        too_large = BadRequest(413, f"the body is larger than this server takes ({self.max_body_bytes:,} bytes)")
        if int(headers.get(b"content-length", b"0") or 0) > self.max_body_bytes:
            raise too_large
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                raise too_large
            if not message.get("more_body"):
                return bytes(body)


async def _answer(send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _stop_gracefully(drain_seconds: float):
    """SIGTERM and Ctrl-C: the HTTP servers stop accepting and answer the requests in flight (uvicorn's graceful
    shutdown, at most ``drain_seconds``), and only then does LitServe stop the model worker."""

    serving_process = os.getpid()

    def stop(signum, frame):
        if os.getpid() != serving_process:
            # A process forked with this handler. An HTTP server: uvicorn raises the signal again once it has
            # drained. The queues' manager: the server stops it after the drain, whoever else is signalled.
            if multiprocessing.current_process().name.startswith("LitServer-"):
                raise SystemExit(0)
            return
        # LitServe names its HTTP server processes LitServer-N (the stopping tests fail if that changes).
        http_servers = [child for child in multiprocessing.active_children() if child.name.startswith("LitServer-")]
        for child in http_servers:
            if signum == signal.SIGTERM:  # Ctrl-C has already reached them from the terminal
                os.kill(child.pid, signal.SIGTERM)
        for child in http_servers:
            child.join(drain_seconds + 1)
        logging.getLogger("litserve").setLevel(logging.ERROR)  # not its "already not alive" about them
        raise KeyboardInterrupt

    return stop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-lightning serve",
        description="Serve a trained model over HTTP, batching concurrent requests (LitServe): a page at /, "
        'POST /predict with {"text": ...} or {"texts": [...]}, GET /health, the API docs at /docs. '
        f"Set {API_KEY_VARIABLE} to require the header X-API-Key.",
    )
    parser.add_argument("model", type=Path, help="a .ckpt written by fit, or a folder written by export")
    parser.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "0.0.0.0", "::"), help="%(default)s")
    parser.add_argument("--port", type=int, default=8000, help="%(default)s")
    parser.add_argument("--max_batch_size", type=int, default=64, help="requests batched together (%(default)s)")
    parser.add_argument(
        "--batch_timeout", type=float, default=0.02, help="seconds to wait for a batch to fill (%(default)s)"
    )
    parser.add_argument("--batch_size", type=int, default=16, help="texts per forward pass (%(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="model worker processes per device (%(default)s)")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda"), help="%(default)s")
    parser.add_argument("--precision", default="auto", help="auto, 32-true, bf16-mixed or 16-mixed (%(default)s)")
    parser.add_argument("--max_texts", type=int, default=DEFAULT_MAX_TEXTS, help="texts a request (%(default)s)")
    parser.add_argument(
        "--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="request body size (%(default)s)"
    )
    parser.add_argument(
        "--drain_timeout", type=float, default=10.0, help="seconds to answer requests in flight at stop (%(default)s)"
    )
    return parser


def main(argv: list[str]) -> None:
    """``emotion-lightning serve MODEL [--host ...] [--port ...] ...``"""
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("litserve") is None:
        raise ServeError("serve needs LitServe: pip install 'emotion-lightning[serve]' (or pip install litserve)")
    for name in ("max_batch_size", "batch_size", "workers", "max_texts", "max_body_bytes"):
        check_at_least(f"--{name}", getattr(args, name), 1)
    import torch

    from emotion_lightning.predictor import PRECISIONS, EmotionPredictor

    if not 1024 <= args.port <= 65535:
        raise ServeError(f"--port must be from 1024 to 65535 (LitServe's range), got {args.port}")
    if args.accelerator == "cuda" and not torch.cuda.is_available():
        raise ServeError("--accelerator cuda: no CUDA GPU is visible here; give --accelerator cpu (or auto)")
    if args.precision not in PRECISIONS:
        raise ServeError(f"--precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as error:
            message = f"cannot serve at {args.host} port {args.port}: {error.strerror}; give another --port"
            raise ServeError(message) from None
    # Loaded here once, so that a wrong path or a bad checkpoint is one line before any server process starts.
    labels = EmotionPredictor.load(args.model, device="cpu").labels
    import litserve as ls

    from emotion_lightning.serve_worker import EmotionAPI

    api = EmotionAPI(args.model, args.precision, args.batch_size, args.max_batch_size, args.batch_timeout, args.workers)
    gate = {"max_texts": args.max_texts, "max_body_bytes": args.max_body_bytes}
    server = ls.LitServer(
        api,
        accelerator=args.accelerator,
        workers_per_device=args.workers,
        middlewares=[(RequestGate, {**gate, "api_key": os.environ.get(API_KEY_VARIABLE)})],
        model_metadata={"model": str(args.model), "labels": labels, **gate},
    )
    server.uvicorn_graceful_timeout = args.drain_timeout
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_gracefully(args.drain_timeout))
    say(f"Serving {args.model} at http://{args.host}:{args.port}/ (POST {API_PATH}; API docs at /docs)")
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False, access_log=False)
    say("Server stopped")
