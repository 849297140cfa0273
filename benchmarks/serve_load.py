"""Load test of `emotion-lightning serve` on loopback, beside the baseline a user would write and the ceiling.

(a) `emotion-lightning serve CHECKPOINT`; (b) the peer: LitServe batching a bfloat16 pipeline (serve_litserve.py, max
batch 64, 20 ms batch timeout, as ours; float32 on a CPU without native bf16); (c) FastAPI + uvicorn +
`transformers.pipeline` on the exported folder, one request a call (serve_baseline.py), float32 and bfloat16 (float32
alone without native bf16); (d) EmotionPredictor in this process: all texts in
one call, and in calls of 64 texts (the most a batch of the server holds at 64 clients), each at batch sizes
64 and 16, the faster kept. C concurrent clients send single-text requests drawn from the validation
texts; each run is bounded in requests and seconds. Then a run with one bad request in ten. `--neighbour` keeps a
CPU-bound process busy on one core through every arm, as a neighbour on a shared machine does.

python benchmarks/serve_load.py CHECKPOINT --output benchmarks/results/serve-load-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from emotion_lightning.compat import cpu_supports_bf16
from emotion_lightning.cpu import SPEED_FLAGS, cpu_flags

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
    """SIGTERM to the server, and the seconds it took to exit; then whatever it left behind (LitServe's workers) is
    killed, so that the next arm finds the port free."""
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    took = round(time.perf_counter() - started, 2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return took


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
    from emotion_lightning.console import set_up_messages

    set_up_messages()
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


def neighbour() -> subprocess.Popen:
    """A CPU-bound process busy on one core (the machine's last), as a neighbour on a shared machine is."""
    code = "import os; os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})\nwhile True: pass"
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def run_server(command: list[str], url: str, port: int, texts, args, env=None) -> list[dict]:
    process = start(command, port, env)
    try:
        return run_clients(url, texts, args)
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=5000, help="at the most clients; a quarter at the others")
    parser.add_argument("--seconds", type=float, default=60, help="bound on each run")
    parser.add_argument("--baseline-seconds", type=float, default=20, help="bound on each FastAPI baseline run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--serve-args", default="", help="extra arguments for emotion-lightning serve")
    parser.add_argument("--neighbour", action="store_true", help="a CPU-bound process busy on one core throughout")
    parser.add_argument("--skip", nargs="*", default=[], choices=["in-process", "bad", "fastapi"], help="arms left out")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    texts = validation_texts()
    url = f"http://127.0.0.1:{args.port}/predict"
    report = {
        "machine": os.uname().nodename,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_flags": sorted(cpu_flags() & set(SPEED_FLAGS)),
        "checkpoint": str(args.checkpoint),
        "neighbour": args.neighbour,
    }
    busy = neighbour() if args.neighbour else None
    try:
        measure(args, texts, url, report)
    finally:
        if busy is not None:
            busy.kill()
    print(json.dumps(report, indent=1))
    print(summary(report), file=sys.stderr)
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


def measure(args, texts, url, report) -> None:
    if "in-process" not in args.skip:
        report["in_process"] = in_process(args.checkpoint, texts)
        print(json.dumps(report["in_process"]), file=sys.stderr, flush=True)

    server = start(
        ["emotion-lightning", "serve", str(args.checkpoint), "--port", str(args.port), *args.serve_args.split()],
        args.port,
    )
    try:
        report["serve"] = run_clients(url, texts, args)
        if "bad" not in args.skip:
            report["serve_bad_one_in_ten"] = asyncio.run(
                load(url, texts, max(args.clients), args.requests, args.seconds, 10)
            )
            print(json.dumps(report["serve_bad_one_in_ten"]), file=sys.stderr, flush=True)
    finally:
        report["serve_stop_seconds"] = stop(server)

    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as folder:
        exported = Path(folder) / "exported"
        subprocess.run(["emotion-lightning", "export", str(args.checkpoint), str(exported)], check=True)
        # The peer: LitServe batching the pipeline at our batching settings, in bf16 where the CPU computes it
        # natively (emulated bf16 runs about a hundredth as fast as fp32: no one would serve it), else fp32.
        report["peer_dtype"] = peer_dtype = "bfloat16" if cpu_supports_bf16() else "float32"
        env = {"SERVE_BASELINE_MODEL": str(exported), "SERVE_PORT": str(args.port), "PYTHONPATH": str(here)}
        env["SERVE_BASELINE_DTYPE"] = peer_dtype
        report["litserve"] = run_server(
            [sys.executable, str(here / "serve_litserve.py")], url, args.port, texts, args, env
        )
        if "fastapi" not in args.skip:
            baseline = {}
            bounded = argparse.Namespace(**{**vars(args), "seconds": args.baseline_seconds})
            for dtype in ("float32", "bfloat16") if peer_dtype == "bfloat16" else ("float32",):
                command = [sys.executable, "-m", "uvicorn", "serve_baseline:app", "--port", str(args.port)]
                env = {"SERVE_BASELINE_MODEL": str(exported), "SERVE_BASELINE_DTYPE": dtype, "PYTHONPATH": str(here)}
                baseline[dtype] = run_server([*command, "--log-level", "warning"], url, args.port, texts, bounded, env)
            report["baseline"] = baseline


def summary(report: dict) -> str:
    """Texts/s at each number of clients, the arms side by side."""
    peer = {"bfloat16": "bf16", "float32": "fp32"}[report.get("peer_dtype", "bfloat16")]
    arms = {"serve": report["serve"], f"litserve ({peer} pipeline)": report["litserve"]}
    for dtype, runs in report.get("baseline", {}).items():
        arms[f"fastapi ({dtype})"] = runs
    clients = [run["clients"] for run in report["serve"]]
    lines = [f"cpu flags {' '.join(report['cpu_flags'])}; neighbour on one core: {report['neighbour']}"]
    lines.append(f"{'clients':>8}" + "".join(f"{name:>26}" for name in arms))
    for number, count in enumerate(clients):
        cells = [
            f"{runs[number]['texts_per_s']:>10.1f} ({runs[number]['good_failed']} failed)" for runs in arms.values()
        ]
        lines.append(f"{count:>8}" + "".join(f"{cell:>26}" for cell in cells))
    ours, peer = report["serve"][-1]["texts_per_s"], report["litserve"][-1]["texts_per_s"]
    lines.append(f"at {clients[-1]} clients: serve / litserve = {ours / peer:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
