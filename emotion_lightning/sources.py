"""Read labelled emotion splits from a local folder or the Hugging Face Hub.

Every reader returns ``{"text": [...], "label": [...]}`` with integer label ids in the order of
``labels``. Problems are reported as :class:`DataFileError` naming the file and the line, so that a bad
row can never shift labels onto the wrong texts.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from emotion_lightning.errors import DataNotFoundError, EmotionLightningError, SettingError

SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
FILE_FORMATS = (".txt", ".csv", ".jsonl", ".json", ".parquet")


class DataFileError(EmotionLightningError, ValueError):
    """A data file that cannot be read as labelled examples; the message names file and line."""

    def __init__(self, path: Path | str, line: int | None, problem: str):
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = Path(path), line, problem


def find_split_files(data_dir: str | Path) -> dict[str, Path]:
    """Map each split present in ``data_dir`` to its file; train and validation are required."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataNotFoundError(f"data_dir {data_dir} is not a folder")
    found: dict[str, Path] = {}
    for split, stems in SPLIT_FILE_STEMS.items():
        candidates = [data_dir / f"{stem}{ext}" for stem in stems for ext in FILE_FORMATS]
        present = [path for path in candidates if path.is_file()]
        if len(present) > 1:
            names = ", ".join(path.name for path in present)
            raise DataNotFoundError(f"data_dir {data_dir} has several files for the {split} split: {names}")
        if present:
            found[split] = present[0]
    missing = [split for split in ("train", "validation") if split not in found]
    if missing:
        expected = ", ".join(f"{stems[0]}.*" for split, stems in SPLIT_FILE_STEMS.items() if split in missing)
        listing = ", ".join(sorted(path.name for path in data_dir.iterdir())) or "nothing"
        raise DataNotFoundError(
            f"data_dir {data_dir} lacks the {' and '.join(missing)} split: expected {expected} "
            f"(formats {', '.join(FILE_FORMATS)}; val.* also accepted), found {listing}"
        )
    return found


def label_to_id(value: object, labels: Sequence[str], path: Path, line: int) -> int:
    """Turn a label given as a word or an integer id into its id, or fail naming file and line."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFileError(path, line, "missing label")
    if isinstance(value, bool):
        raise DataFileError(path, line, f"label {value!r} is neither a label name nor an id")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        label_id = int(value)
        if 0 <= label_id < len(labels):
            return label_id
        raise DataFileError(path, line, f"label id {label_id} is outside 0..{len(labels) - 1}")
    if isinstance(value, str):
        name = value.strip().lower()
        if name in labels:
            return labels.index(name)
    raise DataFileError(
        path, line, f"unknown label {value!r}; expected one of {', '.join(labels)} or 0..{len(labels) - 1}"
    )


def decode_utf8(path: Path) -> str:
    """File contents as text: a UTF-8 BOM is dropped, invalid bytes are an error naming the line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataFileError(path, line, f"bytes that are not UTF-8 ({error.reason})") from None
    return text


def _check_text(text: object, path: Path, line: int) -> str:
    if not isinstance(text, str):
        raise DataFileError(path, line, f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataFileError(path, line, "empty text")
    return text


def read_semicolon_lines(path: Path, labels: Sequence[str]) -> dict[str, list]:
    """The original ``text;label`` format. Texts may contain ';', so split on the last one."""
    texts, label_ids = [], []
    for line_number, line in enumerate(decode_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        text, separator, label = line.rpartition(";")
        if not separator:
            raise DataFileError(path, line_number, "no ';' separating text and label")
        texts.append(_check_text(text, path, line_number))
        label_ids.append(label_to_id(label, labels, path, line_number))
    return {"text": texts, "label": label_ids}


def _records(path: Path) -> list[tuple[int, dict]]:
    """(line or row number, record) pairs from a CSV, JSON lines or Parquet file."""
    suffix = path.suffix
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(decode_utf8(path), newline=""))
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise DataFileError(path, 1, f"CSV header must have columns text and label, got {reader.fieldnames}")
        return [(reader.line_num, row) for row in reader]
    if suffix in (".jsonl", ".json"):
        records = []
        for line_number, line in enumerate(decode_utf8(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFileError(path, line_number, f"not a JSON object ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataFileError(path, line_number, "not a JSON object")
            records.append((line_number, record))
        return records
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if not {"text", "label"} <= set(table.column_names):
        raise DataFileError(path, None, f"Parquet file must have columns text and label, got {table.column_names}")
    # Parquet has no lines; row numbers count from 1 like lines do.
    return list(enumerate(table.select(["text", "label"]).to_pylist(), start=1))


def read_split_file(path: str | Path, labels: Sequence[str]) -> dict[str, list]:
    """Read one split file in any supported format."""
    path = Path(path)
    if path.suffix == ".txt":
        return read_semicolon_lines(path, labels)
    texts, label_ids = [], []
    for line_number, record in _records(path):
        for column in ("text", "label"):
            if column not in record:
                raise DataFileError(path, line_number, f"no {column!r} field")
        texts.append(_check_text(record["text"], path, line_number))
        label_ids.append(label_to_id(record["label"], labels, path, line_number))
    return {"text": texts, "label": label_ids}


def read_predict_file(path: str | Path) -> tuple[list[str], list[int]]:
    """Texts to classify, one per line, with their line numbers.

    Blank lines are not texts: they are left out and reported by line number so that the output
    rows still map to the lines that held text.
    """
    path = Path(path)
    texts, line_numbers = [], []
    for line_number, line in enumerate(decode_utf8(path).splitlines(), start=1):
        if line.strip():
            texts.append(line)
            line_numbers.append(line_number)
    if not texts:
        raise DataFileError(path, None, "no text to classify (the file is empty or only blank lines)")
    return texts, line_numbers


def load_hub_splits(name: str, config: str | None, labels: Sequence[str]) -> dict[str, dict[str, list]]:
    """Download (or read from the local Hugging Face cache) a dataset with ``text`` and ``label`` columns."""
    import datasets

    dataset = datasets.load_dataset(name, config)
    splits = {}
    for split, stems in SPLIT_FILE_STEMS.items():
        hub_split = next((stem for stem in (split, *stems) if stem in dataset), None)
        if hub_split is None:
            continue
        part = dataset[hub_split]
        names = getattr(part.features.get("label"), "names", None)
        if names is not None and [n.lower() for n in names] != [label.lower() for label in labels]:
            raise SettingError(f"{name} labels {names} do not match the configured labels {list(labels)}")
        splits[split] = {"text": part["text"], "label": [int(label) for label in part["label"]]}
    return splits
