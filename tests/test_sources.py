"""Reading split files: every format, and a clear error naming file and line for bad rows."""

from __future__ import annotations

import json

import pytest

from emotion_lightning.data import LABELS
from emotion_lightning.sources import DataFileError, find_split_files, read_predict_file
from tests.conftest import read_split


def test_semicolon_lines_split_on_the_last_semicolon(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("i feel sad; very sad;sadness\nwhat a day;surprise\n")
    assert read_split(path) == {"text": ["i feel sad; very sad", "what a day"], "label": [0, 5]}


def test_bom_and_crlf_are_not_part_of_text_or_label(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes("\ufeffi am glad;joy\r\ni am scared;fear\r\n".encode())
    assert read_split(path) == {"text": ["i am glad", "i am scared"], "label": [1, 4]}


def test_csv_jsonl_and_parquet_take_words_or_ids(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = {"text": ["i am glad", "so angry, really"], "label": [1, 3]}
    csv_path = tmp_path / "train.csv"
    csv_path.write_text('text,label\ni am glad,joy\n"so angry, really",3\n')
    jsonl_path = tmp_path / "train.jsonl"
    jsonl_path.write_text(
        json.dumps({"text": "i am glad", "label": 1})
        + "\n"
        + json.dumps({"text": "so angry, really", "label": "anger"})
        + "\n"
    )
    parquet_path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": expected["text"], "label": ["joy", "anger"]}), parquet_path)
    for path in (csv_path, jsonl_path, parquet_path):
        assert read_split(path) == expected, path.name


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("good;joy\nbad;grumpy\n", 2, "unknown label 'grumpy'"),
        ("good;joy\nno label here;\n", 2, "missing label"),
        ("good;joy\nok;sadness\nno separator\n", 3, "no ';'"),
        ("good;joy\n;anger\n", 2, "empty text"),
        ("good;7\n", 1, "outside 0..5"),
    ],
)
def test_bad_training_rows_name_file_and_line(tmp_path, content, line, problem):
    path = tmp_path / "train.txt"
    path.write_text(content)
    with pytest.raises(DataFileError, match=problem) as error:
        read_split(path)
    assert error.value.line == line
    assert str(error.value).startswith(f"{path}, line {line}:")


def test_bad_csv_row_names_its_line(tmp_path):
    path = tmp_path / "validation.csv"
    path.write_text("text,label\nfine,joy\nnot fine,happyish\n")
    with pytest.raises(DataFileError, match=r"line 3: unknown label"):
        read_split(path)


def test_bytes_that_are_not_utf8_name_their_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"fine;joy\nalso fine;joy\nbroken \xff;anger\n")
    with pytest.raises(DataFileError, match="line 3: bytes that are not UTF-8"):
        read_split(path)


def test_split_files_found_by_name_with_val_accepted(tmp_path):
    for name in ("train.txt", "val.csv"):
        (tmp_path / name).write_text("x")
    found = find_split_files(tmp_path)
    assert found == {"train": tmp_path / "train.txt", "validation": tmp_path / "val.csv"}


def test_missing_split_says_what_the_command_needs_and_what_was_found(tmp_path):
    from emotion_lightning.sources import missing_splits

    (tmp_path / "train.txt").write_text("x")
    (tmp_path / "notes.md").write_text("x")
    assert find_split_files(tmp_path) == {"train": tmp_path / "train.txt"}
    assert str(missing_splits(tmp_path, ["validation"], "fit")) == (
        f"fit needs the validation split: {tmp_path} has none (expected validation.*, formats .txt, .csv, .jsonl, "
        ".json, .parquet; val.* also accepted; found notes.md, train.txt); or give the file with --data.validation_file"
    )


def test_predict_file_skips_blank_lines(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("\ufefffirst\r\n\r\n   \r\n\u200b\r\nsecond; with semicolon\r\n".encode())
    assert read_predict_file(path) == ["first", "second; with semicolon"]


def test_empty_predict_file_is_a_clear_error(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n  \n")
    with pytest.raises(DataFileError, match="no text to classify"):
        read_predict_file(path)


def test_a_predict_file_of_text_label_lines_is_read_as_such_and_only_then(tmp_path):
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("i feel sad;sadness\ni am glad; really;joy\n\nso angry;3\n")
    assert read_predict_file(labelled, LABELS) == ["i feel sad", "i am glad; really", "so angry"]
    mixed = tmp_path / "mixed.txt"  # one line that does not end in a label: every line is a text as it is
    mixed.write_text("i feel sad;sadness\nwinking;)\n")
    assert read_predict_file(mixed, LABELS) == ["i feel sad;sadness", "winking;)"]


def test_a_predict_file_in_a_table_format_is_read_by_its_text_column(tmp_path):
    table = tmp_path / "texts.csv"
    table.write_text('id,text\n1,"hello, world"\n2,  \n')
    with pytest.raises(DataFileError, match=r"texts.csv, line 3: empty text"):
        read_predict_file(table, LABELS)
    no_column = tmp_path / "other.csv"
    no_column.write_text("id,sentence\n1,hello\n")
    with pytest.raises(DataFileError, match=r"other.csv, line 1: CSV header must have columns text, got"):
        read_predict_file(no_column, LABELS)
