"""Serve a trained model over HTTP: ``emotion-lightning serve MODEL`` (the ``serve`` extra: uvicorn).

MODEL is a checkpoint written by ``fit`` or a folder written by ``export``. The server process answers HTTP
(:mod:`emotion_lightning.serve.app`: every request checked before it is queued) and supervises the model worker
processes (:mod:`emotion_lightning.serve.workers`: dynamic batching, 503 and a restart when one dies).

Stopping: SIGTERM or SIGINT, to the server or to its whole process group (Ctrl-C, ``kill -- -PGID``, systemd),
stops accepting, answers the requests in flight (within ``drain_timeout``), stops the workers and exits 0.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from emotion_lightning import console
from emotion_lightning.compat import guarded_http_protocol
from emotion_lightning.console import say
from emotion_lightning.errors import EmotionLightningError, check_at_least
from emotion_lightning.precision import PredictionPrecision

# The API key: when this variable is set, every route but the page and /health needs the header X-API-Key.
API_KEY_VARIABLE = "EMOTION_LIGHTNING_API_KEY"
# LitServe's variable, which version 0.3 read: refused rather than ignored, so that no server starts open by mistake.
FORMER_API_KEY_VARIABLE = "LIT_SERVER_API_KEY"


class ServeError(EmotionLightningError, ValueError):
    """A serve command that cannot start as asked, or a server that cannot go on."""


class _StoppedBeforeServing(BaseException):
    """SIGTERM or SIGINT before the server listens: nothing to drain."""


@dataclass(frozen=True)
class ServeSettings:
    """Serve a trained model over HTTP, batching concurrent requests: a page at /, POST /predict with
    {"text": ...} or {"texts": [...]}, GET /health, /info, the API's page at /docs. Set EMOTION_LIGHTNING_API_KEY
    to require the header X-API-Key on every route but / and /health.

    Args:
        model: a .ckpt written by fit, or a folder written by export
        host: the address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)
        port: the port to listen on (1024 to 65535)
        allowed_hosts: the Host names the server answers (default: this machine's names; "*": any)
        cors_origins: web origins allowed to call the API from a browser, such as http://localhost:3000
        workers: model worker processes (each loads the model; on a CPU they share its cores)
        accelerator: auto, cpu or cuda
        precision: auto, 32-true, bf16-mixed or 16-mixed
        batch_size: texts per forward pass
        pack: pack the texts of a batch into rows, several a row (default: on a CPU)
        compile: torch.compile the bf16 / fp16 copy of the weights: auto (where measured faster), true or false;
            /health answers ready once the compiled code runs
        int8: on a CPU, the linear layers in int8 in place of the bf16 copy: false, true or auto (where
            measured faster for prediction)
        max_batch_size: requests predicted together
        batch_timeout: seconds a batch waits for more requests
        max_texts: texts in one request
        max_body_bytes: bytes in one request body
        read_timeout: seconds a client has to send a request's headers, and again its body
        max_connections: open connections; beyond, the oldest one still sending its headers is closed
        drain_timeout: seconds to answer the requests in flight when stopping
    """

    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    allowed_hosts: list[str] | None = None
    cors_origins: list[str] | None = None
    workers: int = 1
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"
    precision: PredictionPrecision = "auto"
    batch_size: int = 64  # packed on a CPU, calls of 64 texts ran 403-490 texts/s at 64 a pass, 253-380 at 16
    pack: bool | None = None
    compile: Literal["auto", "true", "false"] = "auto"
    # Off, unlike EmotionPredictor's auto: serving measured slower with it (64 clients, 2-core AVX512-VNNI CPU: 221 and
    # 223 requests/s, the second with spinning threads, against 273 without; the cause not found: docs/performance.md).
    int8: Literal["auto", "true", "false"] = "false"
    max_batch_size: int = 64
    batch_timeout: float = 0.02
    max_texts: int = 64
    max_body_bytes: int = 1_000_000
    read_timeout: float = 10.0
    max_connections: int = 1000
    drain_timeout: float = 10.0

    def check(self) -> None:
        """One line for the first setting that cannot work, before anything starts."""
        for name in ("workers", "batch_size", "max_batch_size", "max_texts", "max_body_bytes", "max_connections"):
            check_at_least(f"--{name}", getattr(self, name), 1)
        for name in ("batch_timeout", "read_timeout", "drain_timeout"):
            seconds = getattr(self, name)
            if not 0 <= seconds < math.inf or (name == "read_timeout" and seconds == 0):
                raise ServeError(f"--{name} must be a finite number of seconds (more than 0), got {seconds}")
        if not 1024 <= self.port <= 65535:
            raise ServeError(f"--port must be from 1024 to 65535, got {self.port}")


def serve(settings: ServeSettings) -> None:
    """Run the server until SIGTERM or SIGINT (or until its workers cannot go on: :class:`ServeError`)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_before_serving)
    try:
        _serve(settings)
    except _StoppedBeforeServing:
        say("Stopped before serving")


def _stop_before_serving(signum, frame):
    raise _StoppedBeforeServing


def _serve(s: ServeSettings) -> None:
    # Everything that can be checked without the model comes first: a mistake is one line, at once.
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("httptools") is None:
        raise ServeError("serve needs uvicorn and httptools: pip install 'emotion-lightning[serve]'")
    s.check()
    api_key = _api_key()
    hosts = _allowed_hosts(s.host, s.allowed_hosts)
    if not s.model.exists():
        what = "folder" if not s.model.suffix else "checkpoint"
        raise ServeError(f"{what} {s.model} does not exist")
    listening = _listen(s.host, s.port, backlog=s.max_connections)
    import uvicorn

    from emotion_lightning.serve.app import Rules, ServeApp
    from emotion_lightning.serve.workers import ModelWorkers, WorkerSettings

    worker_settings = WorkerSettings(
        s.model, s.accelerator, s.precision, s.batch_size, s.workers, s.pack, s.compile, s.int8, console.VERBOSE
    )
    server: uvicorn.Server | None = None

    def stop_serving(message: str) -> None:
        if server is not None:
            server.should_exit = True

    pool = ModelWorkers(worker_settings, s.workers, s.max_batch_size, s.batch_timeout, on_fatal=stop_serving)
    try:
        pool.start()
        # The model loads in the workers (this process never imports torch): serving starts once one is ready.
        if not pool.wait_until_ready():
            raise ServeError(pool.fatal)
        if not _is_loopback(s.host) and api_key is None:
            say(
                f"warning: serving on {s.host} with no API key: anyone who can reach this machine can use the model "
                f"(set {API_KEY_VARIABLE})"
            )
        info = {
            **pool.model_info,
            "max_texts": s.max_texts,
            "max_body_bytes": s.max_body_bytes,
            "max_batch_size": s.max_batch_size,
            "workers": s.workers,
        }
        rules = Rules(s.max_texts, s.max_body_bytes, s.read_timeout, api_key, hosts, frozenset(s.cors_origins or ()))
        config = uvicorn.Config(
            ServeApp(pool, rules, info),
            http=guarded_http_protocol(s.read_timeout, s.max_connections),
            ws="none",
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=s.drain_timeout,
        )
        server = uvicorn.Server(config)
        # From here uvicorn answers SIGTERM and SIGINT: it drains, then raises the signal again into this handler.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: setattr(server, "should_exit", True))
        say(f"Serving {s.model} at http://{_url_host(s.host)}:{s.port}/ (POST /predict; API docs at /docs)")
        server.run(sockets=[listening])
    finally:
        pool.stop(wait=s.drain_timeout)
    if pool.fatal:
        raise ServeError(pool.fatal)
    say("Server stopped")


def _api_key() -> bytes | None:
    key = os.environ.get(API_KEY_VARIABLE)
    if key is None and os.environ.get(FORMER_API_KEY_VARIABLE):
        raise ServeError(
            f"{FORMER_API_KEY_VARIABLE} is set, but the key is now read from {API_KEY_VARIABLE}: set that "
            f"(and unset {FORMER_API_KEY_VARIABLE}), so that the server does not start without the key you meant"
        )
    if key is not None and not key.strip():
        raise ServeError(f"{API_KEY_VARIABLE} is set but empty; give it a key, or unset it to serve without one")
    return key.encode() if key else None


def _allowed_hosts(host: str, given: list[str] | None) -> frozenset[str] | None:
    """The Host names answered: loopback's, this machine's own names and the address served on, unless given."""
    if given is not None:
        names = [name.strip().lower() for name in given]
        return None if "*" in names else frozenset(names)
    names = {"localhost", "127.0.0.1", "[::1]"}
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        names.add(host.lower())
    else:
        if not address.is_loopback:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
            if not address.is_unspecified:
                names.add(f"[{host}]" if address.version == 6 else host)
    return frozenset(names)


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket, made here so that a port in use (or a second server on it) is one line.

    ``SO_REUSEADDR``, as uvicorn sets it: a server restarted right after a stop can take its port back while
    the old connections wait out their TIME-WAIT; two live servers still cannot share a port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
        listening.listen(backlog)
    except OSError as error:
        listening.close()
        raise ServeError(f"cannot serve at {host} port {port}: {error.strerror}; give another --port") from None
    return listening


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(args: list[str]) -> None:
    """``emotion-lightning serve MODEL [--host ...] [--port ...] ...``"""
    from emotion_lightning.cli.settings import parse_settings

    serve(parse_settings(ServeSettings, args))
