"""Read labelled emotion splits from a local folder or the Hugging Face Hub.

Files are read one line (or one Parquet batch) at a time into (text, label id) rows, label ids in
the order of ``labels``, and written to Arrow files in chunks: no list of all texts is ever held.
Problems are reported as :class:`DataFileError` naming the file and the line, so that a bad row can
never shift labels onto the wrong texts.
"""

from __future__ import annotations

import codecs
import csv
import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from emotion_lightning.errors import DataNotFoundError, EmotionLightningError, SettingError

SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
FILE_FORMATS = (".txt", ".csv", ".jsonl", ".json", ".parquet")
# Unicode categories that show nothing on their own: separators, controls, format characters (zero-width space,
# joiners, BOM), unassigned code points, combining marks. A text of only these is blank to a reader, and to the
# tokenizer, which drops them: the model would be asked to classify nothing.
INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cn", "Mn", "Me"})


class DataFileError(EmotionLightningError, ValueError):
    """A data file that cannot be read as labelled examples; the message names file and line."""

    def __init__(self, path: Path | str, line: int | None, problem: str):
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = Path(path), line, problem


def find_split_files(data_dir: str | Path) -> dict[str, Path]:
    """Map each split present in ``data_dir`` to its file (a command checks that its own splits are there)."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataNotFoundError(f"data_dir {data_dir} is not a folder")
    found: dict[str, Path] = {}
    for split, stems in SPLIT_FILE_STEMS.items():
        candidates = [data_dir / f"{stem}{ext}" for stem in stems for ext in FILE_FORMATS]
        present = [path for path in candidates if path.exists() or path.is_symlink()]
        for path in present:
            check_split_file(path, split)
        if len(present) > 1:
            names = ", ".join(path.name for path in present)
            raise DataNotFoundError(f"data_dir {data_dir} has several files for the {split} split: {names}")
        if present:
            found[split] = present[0]
    return found


def check_split_file(path: Path, split: str) -> None:
    """A split's file must be a regular file in a format the package reads."""
    if path.is_symlink() and not path.exists():
        raise DataNotFoundError(
            f"{path} is a link that leads nowhere (its target is missing, or the links go round in a loop); "
            f"the {split} split must be a file"
        )
    if not path.exists():
        raise DataNotFoundError(f"the {split} split's file {path} does not exist")
    if not path.is_file():
        # A FIFO, a device (a link to /dev/zero) or a folder would block or never end.
        raise DataNotFoundError(f"{path} is not a regular file; the {split} split must be a file")
    if path.suffix not in FILE_FORMATS:
        raise DataNotFoundError(f"{path}: the {split} split must be one of {', '.join(FILE_FORMATS)}")


def missing_splits(where: str | Path | None, missing: list[str], stage: str | None) -> DataNotFoundError:
    """What a command needs and does not find: the splits, and how to give them."""
    names = " and ".join(missing)
    expected = ", ".join(f"{SPLIT_FILE_STEMS[split][0]}.*" for split in missing)
    options = " or ".join(f"--data.{split}_file" for split in missing)
    found = ""
    if where is not None and Path(where).is_dir():
        found = f"; found {', '.join(sorted(path.name for path in Path(where).iterdir())) or 'nothing'}"
    return DataNotFoundError(
        f"{stage or 'this command'} needs the {names} split: {where} has none (expected {expected}, formats "
        f"{', '.join(FILE_FORMATS)}; val.* also accepted{found}); or give the file with {options}"
    )


def label_to_id(value: object, labels: Sequence[str], path: Path, line: int) -> int:
    """Turn a label given as a word or an integer id into its id, or fail naming file and line."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFileError(path, line, "missing label")
    if isinstance(value, bool):
        raise DataFileError(path, line, f"label {value!r} is neither a label name nor an id")
    if isinstance(value, float):  # pandas writes whole-number id columns as floats (0.0) when one is missing
        if not value.is_integer():
            raise DataFileError(path, line, f"label id {value!r} is not a whole number")
        value = int(value)
    # isdecimal, not isdigit: '²' is a digit that int() refuses.
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal()):
        label_id = int(value)
        if 0 <= label_id < len(labels):
            return label_id
        raise DataFileError(path, line, f"label id {label_id} is outside 0..{len(labels) - 1}")
    if isinstance(value, str):
        lowered = [label.lower() for label in labels]
        if (name := value.strip().lower()) in lowered:
            return lowered.index(name)
    raise DataFileError(
        path, line, f"unknown label {value!r}; expected one of {', '.join(labels)} or 0..{len(labels) - 1}"
    )


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs, read and decoded one line at a time.

    A UTF-8 BOM is dropped, CRLF and LF line ends are both accepted, and bytes that are not UTF-8
    are an error naming the line.
    """
    with path.open("rb") as file:
        for line_number, raw in enumerate(file, start=1):
            if line_number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFileError(path, line_number, f"bytes that are not UTF-8 ({error.reason})") from None
            yield line_number, line.rstrip("\r\n")


def text_problem(text: object) -> str | None:
    """Why ``text`` cannot be classified (not a string, or nothing but whitespace); None when it can.

    The one rule for every way texts come in: split files, the predict file, and lists from Python.
    """
    if not isinstance(text, str):
        return f"text must be a string, got {type(text).__name__}"
    if not text.strip():
        return "empty text"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "text is not valid Unicode (it holds a lone surrogate)"
    if not any(unicodedata.category(character) not in INVISIBLE_CATEGORIES for character in text):
        return "text has no visible character (only spaces, control, format or combining characters)"
    return None


def _check_text(text: object, path: Path, line: int) -> str:
    if problem := text_problem(text):
        raise DataFileError(path, line, problem)
    return text


def check_texts(texts: object) -> list[str]:
    """Texts given from Python as a list, or a clear error naming the positions that are not texts."""
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a list of strings, not one string (wrap it: [text])")
    if isinstance(texts, Mapping) or hasattr(texts, "columns"):
        # Iterating a DataFrame or a dict gives its column names or keys, not its texts.
        raise TypeError(
            f"texts must be a list of strings, not a {type(texts).__name__}: pass its text column, "
            "for example df['text'].tolist()"
        )
    texts = list(texts)
    problems = [(i, problem) for i, text in enumerate(texts) if (problem := text_problem(text))]
    not_strings = [i for i, _ in problems if not isinstance(texts[i], str)]
    if not_strings:
        kinds = ", ".join(f"[{i}] {type(texts[i]).__name__}" for i in not_strings[:5])
        raise TypeError(f"texts must be strings; {len(not_strings)} are not: {kinds}")
    blank = [i for i, problem in problems if problem == "empty text"]
    if blank:
        raise ValueError(f"{len(blank)} texts are empty or only whitespace, at positions {blank[:10]}")
    if problems:
        raise ValueError(f"{problems[0][1]}, at positions {[i for i, _ in problems][:10]}")
    return texts


def _semicolon_rows(path: Path, labels: Sequence[str]) -> Iterator[tuple[str, int]]:
    """The original ``text;label`` format. Texts may contain ';', so split on the last one."""
    for line_number, line in iter_lines(path):
        if not line.strip():
            continue
        text, separator, label = line.rpartition(";")
        if not separator:
            raise DataFileError(path, line_number, "no ';' separating text and label")
        yield _check_text(text, path, line_number), label_to_id(label, labels, path, line_number)


def _records(path: Path, columns: tuple[str, ...] = ("text", "label")) -> Iterator[tuple[int, dict]]:
    """(line or row number, record) pairs from a CSV, JSON lines or Parquet file, read incrementally; a CSV or
    Parquet file must have ``columns``."""
    suffix = path.suffix
    needed = " and ".join(columns)
    if suffix == ".csv":
        reader = csv.DictReader(f"{line}\n" for _, line in iter_lines(path))
        if not reader.fieldnames or not set(columns) <= set(reader.fieldnames):
            raise DataFileError(path, 1, f"CSV header must have columns {needed}, got {reader.fieldnames}")
        if repeated := sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1}):
            raise DataFileError(path, 1, f"CSV header names a column more than once: {', '.join(repeated)}")
        for row in reader:
            if None in row:  # more fields than the header has
                raise DataFileError(
                    path,
                    reader.line_num,
                    f"{len(reader.fieldnames) + len(row[None])} fields, but the header has "
                    f"{len(reader.fieldnames)} (a text with a comma must be quoted)",
                )
            yield reader.line_num, row
    elif suffix in (".jsonl", ".json"):
        for line_number, line in iter_lines(path):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFileError(path, line_number, f"not a JSON object ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataFileError(path, line_number, "not a JSON object")
            yield line_number, record
    else:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        if not set(columns) <= set(parquet.schema_arrow.names):
            names = parquet.schema_arrow.names
            raise DataFileError(path, None, f"Parquet file must have columns {needed}, got {names}")
        # Parquet has no lines; row numbers count from 1 like lines do.
        row_number = 0
        for batch in parquet.iter_batches(batch_size=10_000, columns=list(columns)):
            for record in batch.to_pylist():
                row_number += 1
                yield row_number, record


def iter_split_rows(path: str | Path, labels: Sequence[str]) -> Iterator[tuple[str, int]]:
    """(text, label id) pairs of one split file in any supported format, read incrementally."""
    path = Path(path)
    rows = _semicolon_rows(path, labels) if path.suffix == ".txt" else _record_rows(path, labels)
    empty = True
    for row in rows:
        empty = False
        yield row
    if empty:
        raise DataFileError(path, None, "no examples (the file is empty or only blank lines)")


def _record_rows(path: Path, labels: Sequence[str]) -> Iterator[tuple[str, int]]:
    for line_number, record in _records(path):
        for column in ("text", "label"):
            if column not in record:
                raise DataFileError(path, line_number, f"no {column!r} field")
        yield _check_text(record["text"], path, line_number), label_to_id(record["label"], labels, path, line_number)


def read_predict_file(path: str | Path, labels: Sequence[str] = ()) -> list[str]:
    """The texts of a predict file, read as fit reads a split file: a CSV, JSON lines or Parquet file by its ``text``
    column (a label column, if any, is not read); a ``.txt`` file one text a line, blank lines left out, and as
    ``text;label`` lines when every line ends in ``;`` and one of ``labels`` (or a label id), as the dataset's own
    files do. A text that cannot be classified is named with its file and line."""
    path = Path(path)
    if path.suffix in (".csv", ".jsonl", ".json", ".parquet"):
        texts = []
        for line_number, record in _records(path, columns=("text",)):
            if "text" not in record:
                raise DataFileError(path, line_number, "no 'text' field")
            texts.append(_check_text(record["text"], path, line_number))
    else:
        lines = [(number, line) for number, line in iter_lines(path) if text_problem(line) is None]
        texts = [line for _, line in lines]
        words = _label_words(labels)
        if lines and words and all(_ends_in_label(line, words) for _, line in lines):
            texts = [_check_text(line.rpartition(";")[0], path, number) for number, line in lines]
    if not texts:
        raise DataFileError(path, None, "no text to classify (the file is empty or only blank lines)")
    return texts


def _label_words(labels: Sequence[str]) -> frozenset[str]:
    """What a ``text;label`` line may end in: a label's name (any case) or its id."""
    return frozenset(name.lower() for name in labels) | {str(number) for number in range(len(labels))}


def _ends_in_label(line: str, label_words: frozenset[str]) -> bool:
    """Whether a line ends in ``;`` and one of ``label_words`` (a ``text;label`` line of a split file)."""
    _, separator, label = line.rpartition(";")
    return bool(separator) and label.strip().lower() in label_words


def check_predict_file(path: str | Path | None) -> None:
    """Fail before the model loads if the predict file is missing or not a file (None: texts come from Python)."""
    if path is None:
        return
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"data.predict_file {path} does not exist")
    if not path.is_file():
        raise DataNotFoundError(f"data.predict_file {path} is not a file (one text per line)")


def write_arrow(rows: Iterable[tuple[str, int]], path: Path, chunk_rows: int = 10_000):
    """Write (text, label id) rows to an Arrow file ``chunk_rows`` at a time; return it memory-mapped.

    Only one chunk is ever held as Python objects, so the size of the data does not matter.
    """
    import datasets
    import pyarrow as pa

    schema = pa.schema([("text", pa.string()), ("label", pa.int64()), ("index", pa.int64())])
    written = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for chunk in _chunks(rows, chunk_rows):
            texts, label_ids = zip(*chunk, strict=True)
            indices = pa.array(range(written, written + len(chunk)), pa.int64())
            writer.write_batch(pa.record_batch([pa.array(texts), pa.array(label_ids, pa.int64()), indices], schema))
            written += len(chunk)
    return datasets.Dataset.from_file(str(path))


def _chunks(rows: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_hub_splits(name: str, config: str | None, labels: Sequence[str]) -> dict:
    """Download (or read from the local Hugging Face cache) a dataset with ``text`` and ``label`` columns.

    Returns the splits as Arrow-backed ``datasets.Dataset`` objects with ``text``, ``label`` and ``index``.
    """
    import datasets
    import numpy as np

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
        part = part.select_columns(["text", "label"]).cast_column("label", datasets.Value("int64"))
        splits[split] = part.add_column("index", np.arange(len(part), dtype=np.int64))
    return splits
