"""emotion-lightning serve: the HTTP API, its limits, the API key, stopping with requests in flight, the page."""

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

from emotion_lightning.serve import BadRequest, read_request

pytest.importorskip("litserve", reason="the serve extra (litserve) is part of the dev extra")

TEXTS = ["i am so happy and glad today", "i feel lonely and sad", "scared about my exam", "angry"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``emotion-lightning serve`` in its own process group (as a terminal runs it), ready once /health answers."""

    def __init__(self, model: Path, *args: str, api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key_header = {"X-API-Key": api_key} if api_key else {}
        env = {name: value for name, value in os.environ.items() if name != "LIT_SERVER_API_KEY"}
        if api_key:
            env["LIT_SERVER_API_KEY"] = api_key
        command = [sys.executable, "-m", "emotion_lightning", "serve", str(model), "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while self.get("/health", headers=self.key_header)[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the server did not start:\n{self.process.stdout.read()[-3000:]}")
            time.sleep(0.3)

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

    def stop(self, signum=signal.SIGTERM, group: bool = False) -> float:
        """Send ``signum`` (to the process group when ``group``, as Ctrl-C in a terminal does); seconds to exit."""
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


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    # Two model workers: the batches of concurrent requests are shared between processes.
    settings = ("--precision", "32-true", "--max_texts", "4", "--max_body_bytes", "2000", "--workers", "2")
    running = Server(tiny_checkpoint, *settings)
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
        ({"text": 3}, 422, '"text": text must be a string, got int'),
        ({"texts": "a"}, 422, '"texts" must be a list of at least one string'),
        ({"texts": []}, 422, '"texts" must be a list of at least one string'),
        ({"texts": ["a", None]}, 422, '"texts"[1]: text must be a string, got NoneType'),
        ({"texts": ["a"] * 5}, 413, '"texts" holds 5 texts; this server takes at most 4 a request'),
        ({"text": "\ud800"}, 422, '"text": text is not valid Unicode (it holds a lone surrogate)'),
    ],
)
def test_a_bad_request_is_refused_with_what_is_wrong(payload, status, message):
    with pytest.raises(BadRequest, match="^" + re.escape(message)) as refused:
        read_request(payload, max_texts=4)
    assert refused.value.status == status


def test_one_text_or_a_list_of_texts_is_read():
    assert read_request({"text": "hi"}, max_texts=4) == read_request({"texts": ["hi"]}, max_texts=4).__class__(
        ["hi"], single=True
    )
    assert read_request({"texts": ["a", "b"]}, max_texts=4).texts == ["a", "b"]


def test_serve_without_litserve_says_what_to_install(monkeypatch, tiny_checkpoint):
    import importlib.util

    from emotion_lightning.cli import main

    real_find_spec = importlib.util.find_spec
    hidden = {"litserve": None}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: hidden.get(name, real_find_spec(name)))
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tiny_checkpoint)])
    assert exit_info.value.code == (
        "emotion-lightning: error: serve needs LitServe: "
        "pip install 'emotion-lightning[serve]' (or pip install litserve)"
    )


def test_serve_of_a_missing_model_is_one_line(tmp_path):
    missing = tmp_path / "nope.ckpt"
    command = [sys.executable, "-m", "emotion_lightning", "serve", str(missing)]
    done = subprocess.run(command, capture_output=True, text=True)
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


# -- a running server ---------------------------------------------------------------------------------------


def test_answers_match_the_predictor(server, tiny_checkpoint):
    from emotion_lightning import EmotionPredictor

    expected = EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="32-true")(TEXTS)
    status, many = server.predict({"texts": TEXTS})
    assert status == 200
    answers = many["predictions"]
    for text, answer, prediction in zip(TEXTS, answers, expected, strict=True):
        assert set(answer) == {"label", "score", "probabilities", "truncated"}
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


def test_health_page_and_api_docs(server):
    assert server.get("/health") == (200, b"ok")
    status, page = server.get("/")
    assert status == 200 and b'<textarea id="text"' in page
    assert b"http://" not in page and b"https://" not in page  # nothing from the network: it works air-gapped
    assert server.get("/docs")[0] == 200
    assert "/predict" in json.loads(server.get("/openapi.json")[1])["paths"]


def test_an_exported_folder_is_served_with_an_api_key(tiny_checkpoint, tmp_path):
    from emotion_lightning.cli import main

    main(["export", str(tiny_checkpoint), str(tmp_path / "exported")])
    keyed = Server(tmp_path / "exported", api_key="s3cret-key")
    try:
        assert keyed.predict({"text": "i am glad"})[0] == 401
        assert keyed.predict({"text": "i am glad"}, {"X-API-Key": "wrong"})[0] == 401
        assert keyed.predict(b"not json")[0] == 401  # the key is checked before the body
        assert keyed.get("/health")[0] == 401
        status, answer = keyed.predict({"text": "i am glad"}, {"X-API-Key": "s3cret-key"})
        assert status == 200 and answer["label"] in answer["probabilities"]
        assert keyed.get("/")[0] == 200  # the page itself holds no model output; it asks for the key on 401
    finally:
        keyed.stop()


@pytest.mark.parametrize(
    ("signum", "group"), [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["sigterm", "ctrl-c"]
)
def test_stopping_answers_the_requests_in_flight(tiny_checkpoint, signum, group):
    # A batch waits up to 2 s to fill: the requests are still in flight when the signal comes.
    stopping = Server(tiny_checkpoint, "--batch_timeout", "2", "--max_batch_size", "64")
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = [pool.submit(stopping.predict, {"text": TEXTS[i % 4]}) for i in range(12)]
        time.sleep(0.5)
        seconds = stopping.stop(signum, group)
        statuses = [answer.result()[0] for answer in answers]
    output = stopping.process.stdout.read()
    assert statuses == [200] * 12, output[-3000:]
    assert stopping.process.returncode == 0, output[-3000:]
    assert seconds < 15, seconds  # the drain bound (--drain_timeout 10) and the model worker's stop
    assert "Traceback" not in output, output[-3000:]


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
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_page_classifies_a_sentence_in_a_browser(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium_driver()
    try:
        browser.get(server.url + "/")
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
