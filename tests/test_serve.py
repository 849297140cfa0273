"""emotion-lightning serve: the request rules, the API key, the Host and origin checks, slow clients, stopping
with requests in flight (as systemd and a terminal stop it), killed processes, the page in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from emotion_lightning.serve.app import Refused, parse_json, read_request

pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is part of the dev extra")

TEXTS = ["i am so happy and glad today", "i feel lonely and sad", "scared about my exam", "angry"]
KEY = "s3cret-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def raw_request(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send bytes as they are (repeated headers, any Host) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def post(port: int, body: bytes, *headers: str, host: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    """A POST /predict written by hand: status, headers (lower-case names) and body of the answer."""
    lines = ["POST /predict HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    answer = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    named = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), named, payload


class Server:
    """``emotion-lightning serve`` in its own process group (as a terminal or a service runs it), ready once
    /health answers."""

    def __init__(self, model: Path, *args: str, api_key: str | None = None, port: int | None = None, wait=True):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {name: value for name, value in os.environ.items() if "API_KEY" not in name}
        if api_key:
            env["EMOTION_LIGHTNING_API_KEY"] = api_key
        command = [sys.executable, "-m", "emotion_lightning", "serve", str(model), "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        if wait:
            self.wait_until_ready()

    def wait_until_ready(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while self.get("/health")[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the server did not start:\n{self.process.stdout.read()[-3000:]}")
            time.sleep(0.2)

    def request(self, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        return self.request(path, headers=headers)

    def predict(self, payload, headers: dict | None = None) -> tuple[int, object]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, answer = self.request("/predict", body, {"Content-Type": "application/json", **(headers or {})})
        return status, json.loads(answer) if answer else None

    def workers(self) -> list[int]:
        """The model worker processes (children of the server spawned by multiprocessing)."""
        found = subprocess.run(["pgrep", "-P", str(self.process.pid), "-f", "spawn_main"], capture_output=True)
        return [int(pid) for pid in found.stdout.split()]

    def stop(self, signum=signal.SIGTERM, group: bool = False) -> float:
        """Send ``signum`` to the server, or to its whole process group (``kill -- -PGID``); seconds to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)
            try:
                self.process.wait(timeout=60)
            finally:
                if self.process.poll() is None:
                    os.killpg(self.process.pid, signal.SIGKILL)
        return time.monotonic() - started

    def output(self) -> str:
        return self.process.stdout.read()


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    # Two model workers: the batches of concurrent requests are shared between processes.
    settings = ("--precision", "32-true", "--max_texts", "4", "--max_body_bytes", "2000", "--workers", "2")
    running = Server(tiny_checkpoint, *settings, "--read_timeout", "2", "--max_connections", "100")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def keyed_server(tiny_checkpoint, tmp_path_factory):
    """An exported folder on every interface, with an API key and one web origin allowed; int8 on the CPU."""
    from emotion_lightning.cli import main

    exported = tmp_path_factory.mktemp("served") / "exported"
    main(["export", str(tiny_checkpoint), str(exported)])
    running = Server(
        exported,
        "--host",
        "0.0.0.0",
        "--cors_origins",
        "[http://app.example]",
        "--allowed_hosts",
        "[localhost, 127.0.0.1, emotion.example]",
        "--accelerator",
        "cpu",
        "--int8",
        "true",
        api_key=KEY,
    )
    running.get = lambda path, headers=None: Server.get(running, path, {"X-API-Key": KEY, **(headers or {})})
    yield running
    running.stop()


# -- the request rules, without a server ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ([1], 422, "the body must be a JSON object"),
        ({"txt": "a"}, 422, "unexpected fields ['txt']"),
        ({"text": "a", "texts": ["b"]}, 422, "unexpected fields ['text', 'texts']"),
        ({"text": " \n"}, 422, '"text": empty text'),
        ({"text": "\r\n\t"}, 422, '"text": empty text'),
        ({"text": "\u200b\u200d\ufeff"}, 422, '"text": text has no visible character'),
        ({"text": "\x00\x07"}, 422, '"text": text has no visible character'),
        ({"text": "\u0301"}, 422, '"text": text has no visible character'),
        ({"text": 3}, 422, '"text": text must be a string, got int'),
        ({"texts": "a"}, 422, '"texts" must be a list of at least one string'),
        ({"texts": []}, 422, '"texts" must be a list of at least one string'),
        ({"texts": ["a", None]}, 422, '"texts"[1]: text must be a string, got NoneType'),
        ({"texts": ["a"] * 5}, 413, '"texts" holds 5 texts; this server takes at most 4 a request'),
        ({"text": "\ud800"}, 422, '"text": text is not valid Unicode (it holds a lone surrogate)'),
    ],
)
def test_a_bad_request_is_refused_with_what_is_wrong(payload, status, message):
    with pytest.raises(Refused, match="^" + re.escape(message)) as refused:
        read_request(payload, max_texts=4)
    assert refused.value.status == status


def test_one_text_or_a_list_of_texts_is_read():
    assert read_request({"text": "hi"}, max_texts=4).texts == ["hi"]
    assert read_request({"text": "hi"}, max_texts=4).single
    assert read_request({"texts": ["a", "b"]}, max_texts=4).texts == ["a", "b"]
    assert read_request({"texts": ["é ü 😀"]}, max_texts=4).texts == ["é ü 😀"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"text": "a", "text": "b"}', "the body gives 'text' more than once"),
        (b'{"texts": [{"a": 1, "a": 2}]}', "the body gives 'a' more than once"),
        ('{"text": "a"}'.encode("utf-16"), "the body is not UTF-8"),
        (b'\xef\xbb\xbf{"text": "a"}', "the body is not JSON"),
        (b'{"text": "caf\xe9"}', "the body is not UTF-8"),
        (b"[" * 100_000, "the body is not JSON"),
        (b'{"text": NaN}', "the body is not JSON"),
    ],
)
def test_a_body_is_read_one_way_or_refused(body, message):
    with pytest.raises(Refused, match="^" + re.escape(message)) as refused:
        parse_json(body)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": ' + b"1" * 5000 + b"}",  # valid JSON; more digits than int() converts (ValueError)
        b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # valid JSON; nested past the recursion limit
    ],
)
def test_json_that_pythons_reader_cannot_hold_is_a_400(body):
    with pytest.raises(Refused, match="^the body is not JSON this server reads") as refused:
        parse_json(body)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "raised",
    [
        json.JSONDecodeError("Expecting value", "x", 0),
        ValueError("Exceeds the limit (4300 digits) for integer string conversion"),
        RecursionError("maximum recursion depth exceeded"),
        MemoryError(),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_failure_of_the_json_reader_is_a_400(raised, monkeypatch):
    # What json.loads can raise (its documentation and its C reader): each is the body's fault.
    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr("emotion_lightning.serve.app.json.loads", failing)
    with pytest.raises(Refused) as refused:
        parse_json(b'{"text": "i am glad"}')
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--read_timeout", "0"], "--read_timeout must be a finite number of seconds (more than 0), got 0.0"),
        (["--drain_timeout", "-5"], "--drain_timeout must be a finite number of seconds (more than 0), got -5.0"),
        (["--batch_timeout", ".inf"], "--batch_timeout must be a finite number of seconds (more than 0), got inf"),
        (["--port", "80"], "--port must be from 1024 to 65535, got 80"),
        (["--workers", "0"], "--workers must be an integer of at least 1, got 0"),
    ],
)
def test_a_setting_that_cannot_work_is_one_line(tiny_checkpoint, arguments, message):
    done = subprocess.run(
        [sys.executable, "-m", "emotion_lightning", "serve", str(tiny_checkpoint), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr.strip()) == (1, f"emotion-lightning: error: {message}")


def test_the_former_api_key_variable_is_refused_not_ignored(tiny_checkpoint):
    env = {**os.environ, "LIT_SERVER_API_KEY": "secret"}
    env.pop("EMOTION_LIGHTNING_API_KEY", None)
    command = [sys.executable, "-m", "emotion_lightning", "serve", str(tiny_checkpoint), "--port", str(free_port())]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "LIT_SERVER_API_KEY is set, but the key is now read from EMOTION_LIGHTNING_API_KEY" in done.stderr


@pytest.mark.parametrize("missing", ["uvicorn", "httptools"])
def test_serve_without_its_extra_says_what_to_install(missing, monkeypatch, tiny_checkpoint):
    import importlib.util

    from emotion_lightning.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real_find_spec(name))
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tiny_checkpoint)])
    assert exit_info.value.code == (
        "emotion-lightning: error: serve needs uvicorn and httptools: pip install 'emotion-lightning[serve]'"
    )


def test_serve_of_a_missing_model_is_one_line(tmp_path):
    missing = tmp_path / "nope.ckpt"
    command = [sys.executable, "-m", "emotion_lightning", "serve", str(missing), "--port", str(free_port())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"emotion-lightning: error: checkpoint {missing} does not exist"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_asked_for_without_a_gpu_is_one_line(tiny_checkpoint):
    command = [sys.executable, "-m", "emotion_lightning", "serve", str(tiny_checkpoint), "--accelerator", "cuda"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "emotion-lightning: error: --accelerator cuda: no CUDA GPU is visible here; give --accelerator cpu (or auto)"
    )


def test_a_port_in_use_is_one_line_before_the_model_loads(tiny_checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "emotion_lightning", "serve", str(tiny_checkpoint), "--port", str(port)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"emotion-lightning: error: cannot serve at 127.0.0.1 port {port}: Address already in use; give another --port"
    )


def test_a_worker_that_cannot_start_is_one_message_not_a_hang(tmp_path):
    from emotion_lightning.serve.workers import ModelWorkers, WorkerSettings

    said = []
    pool = ModelWorkers(WorkerSettings(tmp_path / "gone.ckpt", "cpu", "32-true", 4, 1), 1, 8, 0.01, said.append)
    pool.start()
    deadline = time.monotonic() + 120
    while not said and time.monotonic() < deadline:
        time.sleep(0.2)
    pool.stop()
    assert said == [f"checkpoint {tmp_path / 'gone.ckpt'} does not exist"]
    assert pool.ready == 0


def test_a_failure_in_the_dispatch_fails_its_batch_and_not_the_requests_after_it(monkeypatch, tmp_path):
    import asyncio

    from emotion_lightning.serve import workers as serve_workers

    class Alive:
        exitcode = None

        def is_alive(self):
            return True

    class FailingOnce:  # a worker whose answers cannot be read the first time (any bug on the server's side)
        calls = 0

        def __init__(self, number, settings):
            self.process = Alive()

        def wait_until_ready(self, stopping):
            return "ready", {"labels": ["a"]}

        def predict(self, requests):
            FailingOnce.calls += 1
            if FailingOnce.calls == 1:
                raise ValueError("unreadable answer")
            return [[{"label": "a"}] * len(texts) for texts in requests]

        def close(self, wait):
            pass

    monkeypatch.setattr(serve_workers, "_Worker", FailingOnce)
    settings = serve_workers.WorkerSettings(tmp_path / "model.ckpt", "cpu", "32-true", 4, 1)
    pool = serve_workers.ModelWorkers(settings, 1, 8, 0.01, print)
    pool.start()
    assert pool.wait_until_ready()

    async def two_requests():
        first = await asyncio.gather(asyncio.wait_for(pool.predict(["x"]), timeout=10), return_exceptions=True)
        return first[0], await asyncio.wait_for(pool.predict(["y"]), timeout=10)

    try:
        failed, answered = asyncio.run(two_requests())
    finally:
        pool.stop()
    assert isinstance(failed, RuntimeError) and "ValueError" in str(failed)
    assert answered == [{"label": "a"}]


# -- a running server ---------------------------------------------------------------------------------------


def test_answers_match_the_predictor(server, tiny_checkpoint):
    from emotion_lightning import EmotionPredictor

    expected = EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="32-true")(TEXTS)
    status, many = server.predict({"texts": TEXTS})
    assert status == 200
    answers = many["predictions"]
    documented = json.loads(server.get("/openapi.json")[1])["components"]["schemas"]["Prediction"]["properties"]
    assert set(documented) == {"label", "score", "probabilities", "truncated"}
    for text, answer, prediction in zip(TEXTS, answers, expected, strict=True):
        assert set(answer) == set(documented)  # the answer is what the API's document says
        assert answer["label"] == prediction.label, text
        assert list(answer["probabilities"]) == list(prediction.probabilities)
        for label, probability in prediction.probabilities.items():
            assert answer["probabilities"][label] == pytest.approx(probability, abs=1e-5)
        assert answer["truncated"] is False
    status, one = server.predict({"text": TEXTS[0]})
    assert status == 200
    assert one["label"] == answers[0]["label"]
    assert one["score"] == pytest.approx(answers[0]["score"], abs=1e-5)
    status, long = server.predict({"text": " ".join(["happy"] * 300)})  # the tiny model takes 64 tokens
    assert status == 200 and long["truncated"] is True


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "the body is not JSON"),
        (b'{"text": "unclosed"', 400, "the body is not JSON"),
        (b"[" * 100_000, 413, "the body is larger than this server takes (2,000 bytes)"),
        (b"[" * 1_500, 400, "the body is not JSON"),
        (b'{"text": "  "}', 422, '"text": empty text'),
        (b'{"text": "a", "text": "  "}', 400, "the body gives 'text' more than once"),
        (b'{"text": "\\u200b"}', 422, '"text": text has no visible character'),
        (b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "this server takes at most 4 a request"),
        (b'{"prompt": "hi"}', 422, "unexpected fields ['prompt']"),
    ],
)
def test_bad_bodies_get_a_4xx_with_a_message_and_the_server_goes_on(server, body, status, message):
    answered, answer = server.predict(body)
    assert answered == status
    assert message in answer["detail"]
    assert "Traceback" not in json.dumps(answer)
    assert server.predict({"text": "i am glad"})[0] == 200


def test_bad_requests_do_not_fail_the_good_ones_batched_with_them(server):
    bodies = [{"text": TEXTS[i % 4]} if i % 3 else {"text": ""} for i in range(30)]
    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(server.predict, bodies))
    for body, (status, _) in zip(bodies, answers, strict=True):
        assert status == (200 if body["text"] else 422)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-16",
        "application/jsonx",
    ],
)
def test_only_json_is_read_so_no_web_page_can_post_without_asking(server, content_type):
    # What a page on any site may send cross-origin without a CORS preflight: a form, or text/plain.
    headers = ["Origin: https://attacker.example"] + ([f"Content-Type: {content_type}"] if content_type else [])
    status, answer_headers, body = post(server.port, b'{"text": "i am glad"}', *headers)
    assert status == 415
    assert json.loads(body)["detail"] == "send the body as JSON, with the header Content-Type: application/json"
    assert not any(name.startswith("access-control-") for name in answer_headers)


def test_a_json_content_type_with_its_charset_is_read(server):
    status, _, body = post(server.port, b'{"text": "i am glad"}', "Content-Type: Application/JSON; charset=UTF-8")
    assert status == 200 and json.loads(body)["label"]


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "0"])
def test_a_host_not_of_this_machine_is_refused(server, host):
    # DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1.
    status, _, body = post(server.port, b'{"text": "i am glad"}', "Content-Type: application/json", host=host)
    assert status == 421
    assert "this server does not answer for the Host" in json.loads(body)["detail"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"])
def test_this_machines_own_names_are_answered(server, host):
    host = f"{host}:{server.port}"
    status, _, _ = post(server.port, b'{"text": "i am glad"}', "Content-Type: application/json", host=host)
    assert status == 200


@pytest.mark.parametrize(
    "headers",
    [
        ["Host: 127.0.0.1", "Content-Type: application/json", "Content-Type: text/plain"],
        ["Host: 127.0.0.1", "Host: attacker.example", "Content-Type: application/json"],
        ["Host: 127.0.0.1", "Content-Type: application/json", "Origin: http://a.example", "Origin: http://b.example"],
    ],
)
def test_a_header_the_server_reads_must_come_once(server, headers):
    body = b'{"text": "i am glad"}'
    lines = ["POST /predict HTTP/1.1", *headers, f"Content-Length: {len(body)}", "Connection: close"]
    answer = raw_request(server.port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"is given more than once" in answer


SMUGGLED = b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize("framing", ["CL.TE", "TE.CL"])
def test_a_request_with_both_content_length_and_transfer_encoding_is_refused_and_closed(server, framing):
    # Framed by its chunks, this is one empty body and then a second request, GET /info; framed by its Content-Length
    # (as a proxy in front may frame it), one request. Either reading of it is refused, and nothing after it is run.
    chunked = b"0\r\n\r\n" + SMUGGLED
    framings = [f"Content-Length: {len(chunked)}", "Transfer-Encoding: chunked"]
    head = ["POST /predict HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += framings if framing == "CL.TE" else framings[::-1]
    answer = raw_request(server.port, ("\r\n".join(head) + "\r\n\r\n").encode() + chunked)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, and the connection closed (raw_request read to its end)
    assert b"connection: close" in answer.lower()


@pytest.mark.parametrize("lengths", [["20", "20"], ["20", "5"], ["20, 20"]], ids=["same", "different", "listed"])
def test_content_length_given_twice_is_refused_whatever_the_values(server, lengths):
    body = b'{"text": "i am glad"}'[:20]
    head = ["POST /predict HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += [f"Content-Length: {value}" for value in lengths]
    answer = raw_request(server.port, ("\r\n".join(head) + "\r\n\r\n").encode() + body + SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1


def test_an_absolute_form_target_is_answered(server):
    # RFC 9112 3.2.2: a server accepts the absolute form (what a client sends to a proxy) for its own paths.
    body = b'{"text": "i am glad"}'
    head = [
        f"POST http://127.0.0.1:{server.port}/predict HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    answer = raw_request(server.port, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["label"]


@pytest.mark.parametrize(
    ("request_line", "status", "allow"),
    [
        ("POST /nothing", 404, None),
        ("GET /nothing", 404, None),
        ("POST /info", 405, "GET, HEAD"),
        ("PUT /predict", 405, "POST"),
        ("GET /predict", 405, "POST"),
        ("DELETE /", 405, "GET, HEAD"),
    ],
)
def test_unknown_paths_are_404_and_a_wrong_method_405_with_allow(server, request_line, status, allow):
    head = [f"{request_line} HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 0", "Connection: close"]
    answer = raw_request(server.port, ("\r\n".join(head) + "\r\n\r\n").encode())
    status_line, *header_lines = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    assert int(status_line.split()[1]) == status, answer[:300]
    assert headers.get("allow") == (allow.lower() if allow else None)


def test_headers_over_the_limit_are_refused_431(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ")
        connection.settimeout(0.05)
        answer = b""
        for _ in range(64):  # up to 512 KiB of one header, as a client that never ends its headers
            connection.sendall(b"a" * 8192)
            try:
                answer = connection.recv(65536)
            except TimeoutError:
                continue
            break  # answered (and closed): nothing more is sent, so nothing is reset
    assert answer.startswith(b"HTTP/1.1 431"), answer[:300]


def test_health_page_and_api_docs_with_nothing_from_the_network(server):
    assert server.get("/health") == (200, b"ok")
    status, page = server.get("/")
    assert status == 200 and b'<textarea id="text"' in page
    for name in ("/", "/docs"):
        shown = server.get(name)[1]
        assert b"http://" not in shown and b"https://" not in shown  # it works air-gapped
    assert server.get("/docs/swagger-ui-bundle.js")[0] == 200
    assert server.get("/docs/swagger-ui.css")[0] == 200
    assert server.get("/docs/../../etc/passwd")[0] == 404
    document = json.loads(server.get("/openapi.json")[1])
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    texts = next(form for form in body["oneOf"] if "texts" in form["properties"])["properties"]["texts"]
    assert texts["maxItems"] == 4  # this server's --max_texts


def test_the_api_document_lists_every_status_a_prediction_can_be_answered_with():
    from emotion_lightning import compat
    from emotion_lightning.serve import app
    from emotion_lightning.serve.openapi import openapi_document

    raised = {int(status) for status in re.findall(r"Refused\((\d{3})", Path(app.__file__).read_text())}
    guarded = {int(status) for status in re.findall(r"HTTP/1.1 (\d{3})", Path(compat.__file__).read_text())}
    other_paths = {404, 405}  # a page that does not exist, a method a path does not take
    answered = {200} | (raised - other_paths) | guarded
    documented = {int(status) for status in openapi_document(4)["paths"]["/predict"]["post"]["responses"]}
    assert documented == answered


def test_the_api_document_describes_the_bodies_the_server_reads():
    from emotion_lightning.serve.openapi import openapi_document

    body = openapi_document(max_texts=3)["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    for form in body["schema"]["oneOf"]:
        (name,) = form["required"]
        field = form["properties"][name]
        value = "a text" if field["type"] == "string" else ["a text"] * field["maxItems"]
        assert read_request({name: value}, max_texts=3).texts  # what the document allows is read
        with pytest.raises(Refused):  # and nothing beside it
            read_request({name: value, "other": 1}, max_texts=3)
        if field["type"] == "array":
            with pytest.raises(Refused) as refused:
                read_request({name: value + ["one more"]}, max_texts=3)
            assert refused.value.status == 413
    assert read_request(body["example"], max_texts=3).texts


def test_info_says_what_the_server_takes_and_shows_no_path(server, tiny_checkpoint):
    status, body = server.get("/info")
    assert status == 200
    info = json.loads(body)
    assert info["labels"] == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert info["max_texts"] == 4 and info["max_length"] == 64
    assert str(tiny_checkpoint.parent) not in body.decode() and "/" not in json.dumps(info)
    assert info["int8"] is False and info["compiled"] is False  # --precision 32-true: the fp32 weights answer


def test_a_body_sent_too_slowly_is_answered_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        head = (
            "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n"
        )
        connection.sendall(head.encode() + b'{"text": ')
        started = time.monotonic()
        answer = connection.recv(65536)
        while b"\r\n\r\n" in answer and not answer.endswith(b"}") and (chunk := connection.recv(65536)):
            answer += chunk  # the body may come in a segment of its own
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 1.5 < time.monotonic() - started < 10
    assert b"the body did not arrive within 2 s" in answer


def closed_by_the_server(connection: socket.socket) -> bool:
    # A socket closed with bytes it never read ends in a reset rather than an end of stream: both are a close.
    connection.settimeout(5)
    try:
        return connection.recv(100) == b""
    except ConnectionResetError:
        return True


def test_half_open_connections_are_closed_and_cannot_keep_out_a_real_request(server):
    # 150 connections (the server keeps at most 100) that send half a request and wait, as a slowloris does.
    stalled = []
    try:
        for _ in range(150):
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            stalled.append(connection)
        started = time.monotonic()
        assert server.predict({"text": "i am glad"})[0] == 200
        assert time.monotonic() - started < 5
        time.sleep(3)  # past --read_timeout 2
        for connection in stalled:
            assert closed_by_the_server(connection)
    finally:
        for connection in stalled:
            connection.close()
    assert server.predict({"text": "i am glad"})[0] == 200


def test_a_request_sent_amid_a_flood_of_half_open_connections_is_answered(server):
    # Thousands of connections that send half a request, from three processes, and a real request amid them: the
    # server accepts them in bursts and must read what each new one sent before it closes any to make room.
    flood = (
        "import socket, sys, time\n"
        "held = []\n"
        "for _ in range(1500):\n"
        f"    c = socket.create_connection(('127.0.0.1', {server.port}), timeout=30)\n"
        "    c.sendall(b'POST /predict HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Ty')\n"
        "    held.append(c)\n"
        "print(len(held), flush=True)\n"
        "time.sleep(5)\n"
    )
    floods = [subprocess.Popen([sys.executable, "-c", flood], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        assert server.predict({"text": "i am glad"})[0] == 200
        assert time.monotonic() - started < 5
        assert [int(f.communicate(timeout=60)[0]) for f in floods] == [1500] * 3
    finally:
        for f in floods:
            f.kill()


def test_a_second_server_on_the_same_port_fails_in_one_line(server, tiny_checkpoint):
    command = [sys.executable, "-m", "emotion_lightning", "serve", str(tiny_checkpoint), "--port", str(server.port)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"emotion-lightning: error: cannot serve at 127.0.0.1 port {server.port}: Address already in use; "
        "give another --port"
    )
    assert time.monotonic() - started < 5  # before the model loads
    assert server.predict({"text": "i am glad"})[0] == 200


# -- the API key, origins, hosts --------------------------------------------------------------------------


def test_with_a_key_every_route_but_the_page_and_health_needs_it(keyed_server):
    for path in ("/info", "/docs", "/openapi.json", "/docs/swagger-ui.css", "/no-such-page"):
        assert Server.get(keyed_server, path)[0] == 401, path
        assert Server.get(keyed_server, path, {"X-API-Key": "wrong"})[0] == 401, path
    assert Server.get(keyed_server, "/")[0] == 200  # the page holds no model output; it asks for the key on 401
    assert Server.get(keyed_server, "/health")[0] == 200
    assert keyed_server.predict({"text": "i am glad"})[0] == 401
    assert keyed_server.predict(b"not json")[0] == 401  # the key is checked before the body is read
    status, answer = keyed_server.predict({"text": "i am glad"}, {"X-API-Key": KEY})
    assert status == 200 and answer["label"] in answer["probabilities"]
    status, info = keyed_server.get("/info")
    # --int8 true: the int8 copy answers wherever the default precision is a reduced one (bf16 on this CPU).
    import torch

    from emotion_lightning.precision import inference_precision

    reduced = inference_precision(torch.device("cpu")) != "32-true"
    assert status == 200 and json.loads(info)["int8"] == reduced


@pytest.mark.parametrize("keys", [(KEY, "anything"), ("anything", KEY), (KEY, KEY)])
def test_a_repeated_api_key_header_is_refused(keyed_server, keys):
    # Read as the first value by one reader and the last by another, it let a request past every check.
    headers = ["Content-Type: application/json", *(f"X-API-Key: {key}" for key in keys)]
    status, _, body = post(keyed_server.port, b'{"texts": [1]}', *headers)
    assert status == 400
    assert json.loads(body)["detail"] == "the header x-api-key is given more than once"


def test_an_allowed_origin_gets_cors_headers_and_others_none(keyed_server):
    preflight = (
        "OPTIONS /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://app.example\r\n"
        "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type, x-api-key\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = raw_request(keyed_server.port, preflight.encode()).lower()
    assert answer.startswith(b"http/1.1 204")
    assert b"access-control-allow-origin: http://app.example" in answer
    assert b"access-control-allow-headers: content-type, x-api-key" in answer
    allowed = post(
        keyed_server.port,
        b'{"text": "i am glad"}',
        "Content-Type: application/json",
        f"X-API-Key: {KEY}",
        "Origin: http://app.example",
    )
    assert allowed[0] == 200 and allowed[1]["access-control-allow-origin"] == "http://app.example"
    other = post(
        keyed_server.port,
        b'{"text": "i am glad"}',
        "Content-Type: application/json",
        f"X-API-Key: {KEY}",
        "Origin: http://attacker.example",
    )
    assert not any(name.startswith("access-control-") for name in other[1])


def test_allowed_hosts_are_the_ones_given(keyed_server):
    body, headers = b'{"text": "i am glad"}', ("Content-Type: application/json", f"X-API-Key: {KEY}")
    assert post(keyed_server.port, body, *headers, host="emotion.example")[0] == 200
    assert post(keyed_server.port, body, *headers, host="other.example")[0] == 421


def test_serving_every_interface_without_a_key_warns(tiny_checkpoint):
    open_server = Server(tiny_checkpoint, "--host", "0.0.0.0", "--precision", "32-true")
    open_server.stop()
    assert "warning: serving on 0.0.0.0 with no API key: anyone who can reach this machine can use the model" in (
        open_server.output()
    )


# -- stopping and crashing, the way they happen ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGINT, True)],
    ids=["sigterm", "sigterm-to-the-group", "ctrl-c"],
)
def test_stopping_answers_the_requests_in_flight(tiny_checkpoint, signum, group):
    # A batch waits up to 2 s to fill: the requests are still in flight when the signal comes. The group
    # signal is what systemd and `kill -- -PGID` send, and Ctrl-C in a terminal: it reaches the workers too.
    stopping = Server(tiny_checkpoint, "--batch_timeout", "2", "--max_batch_size", "64", "--precision", "32-true")
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = [pool.submit(stopping.predict, {"text": TEXTS[i % 4]}) for i in range(12)]
        time.sleep(0.7)
        seconds = stopping.stop(signum, group)
        statuses = [answer.result()[0] for answer in answers]
    output = stopping.output()
    assert statuses == [200] * 12, output[-3000:]
    assert stopping.process.returncode == 0, output[-3000:]
    assert seconds < 15, seconds  # the drain bound (--drain_timeout 10) and the workers' stop
    assert "Traceback" not in output and "leaked" not in output, output[-3000:]
    assert output.rstrip().endswith("Server stopped")
    if group:  # the port is free again at once: a restart right after a stop takes it (SO_REUSEADDR)
        again = Server(tiny_checkpoint, "--precision", "32-true", port=stopping.port)
        assert again.predict({"text": "i am glad"})[0] == 200
        again.stop()


def test_sigterm_while_starting_exits_promptly_and_quietly(tiny_checkpoint):
    starting = Server(tiny_checkpoint, wait=False)
    time.sleep(2)  # importing torch, or loading the model
    seconds = starting.stop(signal.SIGTERM, group=True)
    output = starting.output()
    assert starting.process.returncode == 0, output
    assert seconds < 10
    assert "Traceback" not in output and "Serving" not in output, output


def test_a_killed_worker_answers_its_requests_503_at_once_and_is_started_again(tiny_checkpoint):
    crashing = Server(tiny_checkpoint, "--precision", "32-true")
    try:
        [worker] = crashing.workers()
        # The worker is stopped (SIGSTOP) so that the first batch is surely in it when it is killed. A request that
        # reached the server after that batch was sent waits for the next worker: 200 from the one started again.
        os.kill(worker, signal.SIGSTOP)

        def predict_and_time(text: str) -> tuple[int, dict, float]:
            status, body = crashing.predict({"text": text})
            return status, body, time.monotonic()

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = [pool.submit(predict_and_time, TEXTS[i % 4]) for i in range(8)]
            time.sleep(1.0)
            killed = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            results = [answer.result() for answer in answers]
        in_the_killed_worker = [(body, at - killed) for status, body, at in results if status == 503]
        assert in_the_killed_worker and {status for status, _, _ in results} <= {503, 200}, results
        for body, answered in in_the_killed_worker:
            assert "the model worker stopped while predicting this request (killed by signal 9)" in body["detail"]
            assert answered < 3
        crashing.wait_until_ready()
        assert crashing.predict({"text": "i am glad"})[0] == 200
        [restarted] = crashing.workers()
        assert restarted != worker
        # The server itself killed: its port refuses at once, and its worker dies with it.
        os.kill(crashing.process.pid, signal.SIGKILL)
        crashing.process.wait(10)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", crashing.port), timeout=5).close()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{restarted}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{restarted}").exists()
    finally:
        crashing.stop()
    output = crashing.output()
    assert "Model worker 0 ended (killed by signal 9); starting it again" in output
    assert "Traceback" not in output


# -- the page in a real browser -----------------------------------------------------------------------------


def chromium_driver():
    """Debian's chromium and chromedriver (`.ci/run` installs them), headless."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = "" if browser and driver else "chromium and chromedriver (apt-get install chromium chromium-driver)"
    try:
        from selenium import webdriver
    except ImportError:
        missing = missing or "selenium (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("EMOTION_LIGHTNING_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test must run here (EMOTION_LIGHTNING_REQUIRE_BROWSER), but {missing} is missing")
        pytest.skip(f"no real browser to test the page with: {missing} is missing (.ci/run installs it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,700"):
        options.add_argument(flag)
    options.add_argument("--disable-background-networking")
    # No name but this machine's resolves: a page that needed the network (a CDN's script) would show nothing.
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page made
    return webdriver.Chrome(service=Service(driver), options=options)


def requested(browser) -> list[str]:
    """The URLs the pages asked for, from Chromium's network log."""
    messages = (json.loads(entry["message"])["message"] for entry in browser.get_log("performance"))
    return [m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"]


def test_the_page_classifies_a_sentence_in_a_browser(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium_driver()
    try:
        browser.get(server.url + "/")
        browser.find_element(By.ID, "submit").click()  # an empty box: said on the page, not sent
        WebDriverWait(browser, 10).until(lambda page: page.find_element(By.ID, "error").text.strip())
        assert browser.find_element(By.ID, "error").text == "Type a text first."
        browser.find_element(By.ID, "text").send_keys("i am so happy and glad today")
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 30).until(lambda page: page.find_element(By.ID, "label").text.strip())
        label = browser.find_element(By.ID, "label").text
        bars = browser.find_elements(By.CSS_SELECTOR, ".bar")
        shown = {bar.get_attribute("data-label"): float(bar.get_attribute("data-probability")) for bar in bars}
        browser.save_screenshot(str(tmp_path / "page.png"))
    finally:
        browser.quit()
    status, expected = server.predict({"text": "i am so happy and glad today"})
    assert label == expected["label"]
    assert list(shown) == list(expected["probabilities"])
    assert len(shown) == 6
    for name, probability in expected["probabilities"].items():
        assert shown[name] == pytest.approx(probability, abs=1e-6)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_api_docs_page_shows_the_operations_in_a_browser(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium_driver()
    try:
        browser.get(server.url + "/docs")
        WebDriverWait(browser, 30).until(lambda page: page.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        paths = [element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
        urls = requested(browser)
    finally:
        browser.quit()
    assert "/predict" in paths and "/health" in paths
    assert urls and all(url.startswith((server.url, "data:")) for url in urls), urls  # nothing left the machine
