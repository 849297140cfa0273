"""Load test of `emotion-lightning serve` on loopback, beside the baseline a user would write and the ceiling.

(a) `emotion-lightning serve CHECKPOINT`; (b) FastAPI + uvicorn + `transformers.pipeline` on the exported folder,
one request a call (serve_baseline.py), at its faster dtype; (c) EmotionPredictor in this process: all texts in
one call, and in calls of 64 texts (the most a batch of the server holds at 64 clients), each at batch sizes
64 and 16, the faster kept. C concurrent clients send single-text requests drawn from the validation
texts; each run is bounded in requests and seconds. Then a run with one bad request in ten.

python benchmarks/serve_load.py CHECKPOINT --output benchmarks/results/serve-load-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emotion" / "validation.txt"
BAD_BODIES = [
    b"not json",
    b'{"text": ""}',
    b'{"text": "   "}',
    b'{"txt": "wrong field"}',
    b'{"text": 42}',
    b'{"texts": "not a list"}',
    b'{"texts": []}',
    b"[1, 2, 3]",
    b'{"text": "\\ud800"}',
    b'{"texts": [' + b",".join([b'"a"'] * 65) + b"]}",
]


def validation_texts() -> list[str]:
    texts = [line.rsplit(";", 1)[0] for line in DATA.read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(texts)
    return texts


async def load(url: str, texts: list[str], clients: int, requests: int, seconds: float, bad_every: int = 0):
    """``clients`` coroutines, each sending one request after the other until ``requests`` are sent or time runs out."""
    latencies, statuses, failures = [], [], []
    sent = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client():
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                number = sent
                sent += 1
                bad = bad_every and number % bad_every == bad_every - 1
                body = (
                    BAD_BODIES[number // bad_every % len(BAD_BODIES)]
                    if bad
                    else json.dumps({"text": texts[number % len(texts)]}).encode()
                )
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"content-type": "application/json"}) as answer:
                        payload = await answer.read()
                        status = answer.status
                except aiohttp.ClientError as error:
                    status, payload = 0, str(error).encode()
                latencies.append(time.perf_counter() - started)
                statuses.append((bad, status))
                if not bad and status != 200:
                    failures.append((status, payload[:200]))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    good = [latency for latency, (bad, _) in zip(latencies, statuses, strict=True) if not bad]
    return {
        "clients": clients,
        "requests": len(statuses),
        "seconds": round(elapsed, 2),
        "texts_per_s": round(sum(1 for bad, _ in statuses if not bad) / elapsed, 1),
        "p50_ms": round(statistics.median(good) * 1000, 1),
        "p99_ms": round(sorted(good)[int(len(good) * 0.99) - 1] * 1000, 1),
        "good_failed": len(failures),
        "bad_sent": sum(1 for bad, _ in statuses if bad),
        "bad_4xx": sum(1 for bad, status in statuses if bad and 400 <= status < 500),
        "answers_500": sum(1 for _, status in statuses if status >= 500),
        "first_failures": failures[:3],
    }


def start(command: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=sys.stderr, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200:
                return process
        except OSError:
            time.sleep(0.5)
        if process.poll() is not None:
            raise SystemExit(f"{command} ended with {process.returncode}")
    raise SystemExit(f"{command} was not ready in 180 s")


def stop(process: subprocess.Popen) -> float:
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return round(time.perf_counter() - started, 2)


def run_clients(url, texts, args, bad_every=0):
    results = []
    for clients in args.clients:
        requests = args.requests if clients == max(args.clients) else args.requests // 4
        result = asyncio.run(load(url, texts, clients, requests, args.seconds, bad_every))
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
    return results


def in_process(checkpoint: Path, texts: list[str]) -> dict:
    from emotion_lightning import EmotionPredictor
    from emotion_lightning.console import quiet_libraries

    quiet_libraries()
    rates = {}
    # batch_size 64 is EmotionPredictor's default; 16 is what serve uses for its smaller batches.
    for batch_size in (64, 16):
        predictor = EmotionPredictor.load(checkpoint, device="cpu", batch_size=batch_size)
        predictor(texts[:64])
        started = time.perf_counter()
        predictor(texts)
        rates[f"one_call_batch_size_{batch_size}"] = len(texts) / (time.perf_counter() - started)
        started = time.perf_counter()
        for start_at in range(0, len(texts), 64):
            predictor(texts[start_at : start_at + 64])
        rates[f"calls_of_64_batch_size_{batch_size}"] = len(texts) / (time.perf_counter() - started)
    best = {
        "one_call_texts_per_s": max(rates["one_call_batch_size_64"], rates["one_call_batch_size_16"]),
        "calls_of_64_texts_per_s": max(rates["calls_of_64_batch_size_64"], rates["calls_of_64_batch_size_16"]),
    }
    return {name: round(rate, 1) for name, rate in {**rates, **best}.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=5000, help="at the most clients; a quarter at the others")
    parser.add_argument("--seconds", type=float, default=60, help="bound on each run")
    parser.add_argument("--baseline-seconds", type=float, default=20, help="bound on each baseline run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--serve-args", default="", help="extra arguments for emotion-lightning serve")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    texts = validation_texts()
    url = f"http://127.0.0.1:{args.port}/predict"
    report = {"machine": os.uname().nodename, "cores": os.cpu_count(), "checkpoint": str(args.checkpoint)}

    report["in_process"] = in_process(args.checkpoint, texts)
    print(json.dumps(report["in_process"]), file=sys.stderr, flush=True)

    server = start(
        ["emotion-lightning", "serve", str(args.checkpoint), "--port", str(args.port), *args.serve_args.split()],
        args.port,
    )
    try:
        report["serve"] = run_clients(url, texts, args)
        report["serve_bad_one_in_ten"] = asyncio.run(
            load(url, texts, max(args.clients), args.requests, args.seconds, 10)
        )
        print(json.dumps(report["serve_bad_one_in_ten"]), file=sys.stderr, flush=True)
    finally:
        report["serve_stop_seconds"] = stop(server)

    with tempfile.TemporaryDirectory() as folder:
        exported = Path(folder) / "exported"
        subprocess.run(["emotion-lightning", "export", str(args.checkpoint), str(exported)], check=True)
        baseline = {}
        bounded = argparse.Namespace(**{**vars(args), "seconds": args.baseline_seconds})
        for dtype in ("float32", "bfloat16"):
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "serve_baseline:app",
                "--port",
                str(args.port),
                "--log-level",
                "warning",
            ]
            env = {
                "SERVE_BASELINE_MODEL": str(exported),
                "SERVE_BASELINE_DTYPE": dtype,
                "PYTHONPATH": str(Path(__file__).parent),
            }
            process = start(command, args.port, env)
            try:
                baseline[dtype] = run_clients(url, texts, bounded)
            finally:
                stop(process)
        report["baseline"] = baseline

    best_baseline = max(runs[-1]["texts_per_s"] for runs in baseline.values())
    ours = report["serve"][-1]["texts_per_s"]
    report["at_most_clients"] = {
        "serve_texts_per_s": ours,
        "baseline_texts_per_s": best_baseline,
        "serve_over_baseline": round(ours / best_baseline, 2),
        "serve_over_in_process_one_call": round(ours / report["in_process"]["one_call_texts_per_s"], 2),
        "serve_over_in_process_calls_of_64": round(ours / report["in_process"]["calls_of_64_texts_per_s"], 2),
    }
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
