"""Tokenizing at the size of dair-ai/emotion "unsplit" (416,809 rows): time and peak memory.

    python benchmarks/tokenize_scale.py                  # 416,809 rows, processes 1 and 2
    python benchmarks/tokenize_scale.py --rows 100000 --processes 1,2,4

The training file is the real ``train.txt`` repeated until it has ``--rows`` rows. Each
configuration runs in a child process of its own, so that its peak memory is its own:

  start-up       imports and the tokenizer only: the memory every arm starts from
  lists          the former way, as a baseline: every text and label read into Python lists,
                 ``datasets.Dataset.from_dict``, one-process ``map``
  streamed N     ``EmotionDataModule.prepare_data()``: rows streamed into Arrow files in chunks,
                 tokenized by N processes (``num_proc``), saved memory-mapped

Peak memory is the largest resident set of the main process and, separately, of any one of its
tokenizing child processes (``ru_maxrss``). Not a test: it prints measured numbers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "emotion"
UNSPLIT_ROWS = 416_809


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with train.txt and validation.txt")
    parser.add_argument("--rows", type=int, default=UNSPLIT_ROWS)
    parser.add_argument("--processes", default="1,2", help="num_proc values to measure, comma-separated")
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--output", type=Path, help="also write the numbers as JSON here")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_large_copy(data_dir: Path, rows: int, folder: Path) -> None:
    """train.txt repeated to ``rows`` rows, next to the real validation.txt."""
    lines = (data_dir / "train.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "train.txt").open("w", encoding="utf-8") as out:
        for row in range(rows):
            out.write(lines[row % len(lines)])
    shutil.copy(data_dir / "validation.txt", folder / "validation.txt")


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def run_arm(arm: str, args) -> dict:
    """One configuration, in this (child) process."""
    from emotion_lightning.data import EmotionDataModule

    data_dir = args.work_dir / "data"
    cache = args.work_dir / f"cache-{arm}"
    start = time.perf_counter()
    if arm == "startup":
        from emotion_lightning.backbone import load_tokenizer

        load_tokenizer(args.backbone)
        rows = 0
    elif arm == "lists":
        import datasets

        from emotion_lightning import EmotionClassifier
        from emotion_lightning.sources import iter_split_rows

        model = EmotionClassifier(backbone=args.backbone)
        datamodule = EmotionDataModule(data_dir=str(data_dir), cache_dir=str(cache)).encode_like(model)
        tokenizer, max_length = datamodule.tokenizer, datamodule.max_length

        def encode(batch):
            input_ids = tokenizer(batch["text"], truncation=True, max_length=max_length)["input_ids"]
            return {"input_ids": input_ids, "length": [len(ids) for ids in input_ids]}

        for split in ("train", "validation"):
            texts, labels = zip(*iter_split_rows(data_dir / f"{split}.txt", datamodule.labels), strict=True)
            table = datasets.Dataset.from_dict({"text": texts, "label": labels, "index": list(range(len(texts)))})
            tokenized = table.map(encode, batched=True, batch_size=2000)
            tokenized.save_to_disk(str(cache / split))
            if split == "train":
                rows = len(tokenized)
    else:
        processes = int(arm.split("-")[1])
        from emotion_lightning import EmotionClassifier

        datamodule = EmotionDataModule(data_dir=str(data_dir), cache_dir=str(cache), num_proc=processes)
        datamodule.encode_like(EmotionClassifier(backbone=args.backbone))
        datamodule.prepare_data()
        datamodule.setup("fit")
        rows = len(datamodule.splits["train"])
    seconds = time.perf_counter() - start
    return {
        "arm": arm,
        "rows": rows,
        "seconds": round(seconds, 1),
        "rows_per_second": round(rows / seconds) if rows else None,
        "peak_main_mib": round(peak_mib(resource.RUSAGE_SELF)),
        "peak_worker_mib": round(peak_mib(resource.RUSAGE_CHILDREN)),
        "cache_mib": round(sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20, 1)
        if cache.exists()
        else 0,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args)))
        return
    import os

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        make_large_copy(args.data_dir, args.rows, work_dir / "data")
        size = (work_dir / "data" / "train.txt").stat().st_size / 2**20
        print(f"train.txt: {args.rows} rows, {size:.1f} MiB; {os.cpu_count()} CPUs; backbone {args.backbone}")
        arms = ["startup", "lists"] + [f"streamed-{n}" for n in args.processes.split(",")]
        results = []
        for arm in arms:
            command = [sys.executable, __file__, "--arm", arm, "--work-dir", str(work_dir)]
            command += ["--backbone", args.backbone, "--rows", str(args.rows)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{arm} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))

    header = f"{'':<22}| {'seconds':>8} | {'rows/s':>8} | {'peak main MiB':>13} | {'peak worker MiB':>15}"
    print(header)
    print("-" * len(header))
    for result in results:
        name = {"startup": "start-up only", "lists": "lists (baseline)"}.get(result["arm"])
        name = name or f"streamed, num_proc={result['arm'].split('-')[1]}"
        print(
            f"{name:<22}| {result['seconds']:>8} | {result['rows_per_second'] or '-':>8} | "
            f"{result['peak_main_mib']:>13} | {result['peak_worker_mib']:>15}"
        )
    if args.output:
        args.output.write_text(json.dumps({"rows": args.rows, "results": results}, indent=2))
        print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
