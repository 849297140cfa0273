"""Read back what an offline W&B run recorded, from its own ``.wandb`` file.

The file is a LevelDB-style log of wandb's protobuf ``Record`` messages: a 7-byte file header,
then 32 KiB blocks of chunks, each with a 7-byte header (checksum, length, type).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B", f"{path} is not a W&B log (header {ident!r})"
    records, pending, position = [], b"", HEADER
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # the block's tail is padding
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if position + HEADER + length > len(data):
            break  # a chunk still being written
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def read_finished_run(path: Path, timeout: float = 60.0) -> list:
    """The records of a finished run, waiting for its last one (``exit``) to reach the file.

    ``Run.finish()`` can return before wandb's service has flushed the end of the file.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def summarize_run(run_dir: Path) -> dict:
    """History keys, media (key -> its description), config, summary and artifacts of one offline run."""
    (wandb_file,) = run_dir.glob("*.wandb")
    history_keys, media, config, summary, artifacts = set(), {}, {}, {}, []
    for record in read_finished_run(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                if len(item.nested_key) > 1:  # a media value (table, chart) is stored field by field
                    *key, field = item.nested_key
                    media.setdefault("/".join(key), {})[field] = json.loads(item.value_json)
                else:
                    history_keys.add(item.key or item.nested_key[0])
        elif kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "artifact":
            artifacts.append(
                {
                    "type": record.artifact.type,
                    "name": record.artifact.name,
                    "aliases": list(record.artifact.aliases),
                    "files": [entry.path for entry in record.artifact.manifest.contents],
                }
            )
        elif kind == "run":
            for item in record.run.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"history_keys": history_keys, "media": media, "config": config, "summary": summary, "artifacts": artifacts}
