"""Files the user was handed and commands run twice: nothing they hold decides where the package writes, no
command writes over what it reads, and nothing silently gives a wrong answer.

The crafted files here are the ones a colleague could pass on: a checkpoint whose tokenizer file names are
paths, an ``hpc_ckpt_1.ckpt`` with a pickled payload, a checkpoint damaged inside a tensor.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from emotion_lightning import EmotionClassifier, EmotionPredictor
from emotion_lightning.checkpoints import CheckpointError
from emotion_lightning.cli import main, run
from emotion_lightning.predictor import ExportedModelError
from emotion_lightning.runs import HeldRunFolders, run_folders
from emotion_lightning.sources import DataFileError, iter_split_rows
from emotion_lightning.tokenization import Encoder
from tests.conftest import fixture_rows, write_semicolon_file
from tests.test_faults import error_of, predict_args, trained  # noqa: F401  (trained: a fixture)


def best_of(trained) -> Path:  # noqa: F811
    return trained[0] / "checkpoints" / "best.ckpt"


def texts_file(folder: Path, *texts: str, name: str = "texts.txt") -> Path:
    path = folder / name
    path.write_text("".join(f"{text}\n" for text in texts))
    return path


# -- a checkpoint never decides where the package writes -----------------------------------------------


def crafted_checkpoint(good: Path, target: Path, names: dict[str, bytes]) -> Path:
    """``good``, with tokenizer file names that are paths (it still loads with ``weights_only``)."""
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["tokenizer_files"] = {**checkpoint["tokenizer_files"], **names}
    torch.save(checkpoint, target)
    assert isinstance(torch.load(target, weights_only=True), dict)
    return target


@pytest.mark.parametrize("kind", ["absolute", "parent", "separator"])
def test_tokenizer_file_names_that_are_paths_are_refused_everywhere(kind, trained, tmp_path):  # noqa: F811
    outside = tmp_path / "outside"
    outside.mkdir()
    name = {
        "absolute": str(outside / "zz_evil.pth"),
        "parent": "../" * 12 + str(outside / "zz_evil.pth").lstrip("/"),
        "separator": "sub/zz_evil.pth",
    }[kind]
    crafted = crafted_checkpoint(best_of(trained), tmp_path / "crafted.ckpt", {name: b"import os; os.system('x')\n"})
    expected = f"{crafted} is refused: it names a tokenizer file {name!r}, which is not a plain file name"

    texts = texts_file(tmp_path, "i feel glad")
    for command in (
        [
            "predict",
            *predict_args(trained, texts)[1:-4],
            "--ckpt_path",
            str(crafted),
            "--data.predict_file",
            str(texts),
        ],
        ["validate", *trained[1], "--ckpt_path", str(crafted)],
        ["fit", *trained[1], "--ckpt_path", str(crafted)],
        ["export", str(crafted), str(tmp_path / "exported")],
    ):
        assert error_of(command) == expected, command[0]
    with pytest.raises(CheckpointError, match="is refused"):
        EmotionPredictor.from_checkpoint(crafted, device="cpu")
    with pytest.raises(ValueError, match="not a plain file name"):
        EmotionClassifier.load_from_checkpoint(crafted, map_location="cpu")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "exported").exists()


class WritesAFile:
    """A pickled object that creates a file when it is unpickled: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.mark.parametrize("subcommand", ["validate", "fit"])
def test_hpc_checkpoint_goes_through_the_checked_reader(subcommand, trained, tmp_path):  # noqa: F811
    marker = tmp_path / "code-ran"
    root = tmp_path / "root"
    root.mkdir()
    torch.save({"state_dict": WritesAFile(marker), "hyper_parameters": {}}, root / "hpc_ckpt_1.ckpt")
    args = [*trained[1], "--trainer.default_root_dir", str(root), "--ckpt_path", "hpc"]
    message = error_of([subcommand, *args])
    assert message.startswith(f"{root / 'hpc_ckpt_1.ckpt'} is not an emotion-lightning checkpoint")
    assert "weights_only=False" not in message
    assert not marker.exists()
    assert run_folders(root) == []


def test_a_damaged_tensor_is_found_before_the_weights_are_used(trained, tmp_path):  # noqa: F811
    damaged = tmp_path / "damaged.ckpt"
    shutil.copy(best_of(trained), damaged)
    with zipfile.ZipFile(damaged) as archive:
        tensors = [info for info in archive.infolist() if "/data/" in info.filename and info.file_size > 4096]
        member = max(tensors, key=lambda info: info.file_size)
    with damaged.open("r+b") as file:
        file.seek(member.header_offset + 26)
        name_length, extra_length = int.from_bytes(file.read(2), "little"), int.from_bytes(file.read(2), "little")
        file.seek(member.header_offset + 30 + name_length + extra_length + member.file_size // 2)
        file.write(bytes(2048))
    assert isinstance(torch.load(damaged, weights_only=True), dict)  # still loads: only the checksum tells
    expected = f"{damaged} is damaged: {member.filename} does not match the checksum written with it"
    assert error_of(["validate", *trained[1], "--ckpt_path", str(damaged)]).startswith(expected)
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        EmotionPredictor.from_checkpoint(damaged, device="cpu")


# -- no command writes over what it reads, or over an earlier result ------------------------------------


@pytest.mark.parametrize("clash", ["predict-file", "checkpoint"])
def test_predict_output_is_never_a_file_predict_reads(clash, trained, tmp_path):  # noqa: F811
    copy = tmp_path / "best.ckpt"
    shutil.copy(best_of(trained), copy)
    texts = texts_file(tmp_path, "i feel glad", "so sad")
    output = texts if clash == "predict-file" else copy
    before = output.read_bytes()
    args = ["predict", *trained[1], "--ckpt_path", str(copy), "--data.predict_file", str(texts)]
    message = error_of([*args, "--prediction_writer.output_file", str(output)])
    assert message.startswith(f"prediction_writer.output_file {output} is {output}, which predict reads")
    assert output.read_bytes() == before


def test_a_second_prediction_never_replaces_the_first(trained, tmp_path):  # noqa: F811
    folder, args = trained
    first = texts_file(tmp_path, "i feel glad", "so sad", "scared")
    second = texts_file(tmp_path, "angry", "amazed", name="other.txt")
    for texts in (first, second, first):
        run(["predict", *args, "--ckpt_path", str(best_of(trained)), "--data.predict_file", str(texts)])
    outputs = folder / "predictions"
    counts = {path.name: len(path.read_text().splitlines()) - 1 for path in outputs.iterdir()}
    assert counts == {"texts.csv": 3, "other.csv": 2, "texts-2.csv": 3}


def test_resuming_a_run_that_another_fit_still_trains_is_refused(trained, tmp_path):  # noqa: F811
    folder, args = trained
    last = folder / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    running = HeldRunFolders()
    assert running.lock(folder)  # as the running fit holds it
    try:
        # One epoch more than the run trained: a finished run is refused before this is looked at.
        message = error_of(["fit", *args, "--ckpt_path", "last", "--trainer.max_epochs", "2"])
    finally:
        running.release(failed=False)
    assert message.startswith(f"--ckpt_path {last}: its run {folder} is still being trained by another fit")
    assert last.read_bytes() == before


# -- no silent wrong answer ------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["predict", "validate", "test"])
def test_evaluating_needs_a_trained_model(subcommand, trained, tmp_path):  # noqa: F811
    extra = ["--data.predict_file", str(texts_file(tmp_path, "i feel glad"))] if subcommand == "predict" else []
    message = error_of([subcommand, *trained[1], *extra])
    assert message.startswith(f"{subcommand} needs a trained model: give --ckpt_path")


def test_from_pretrained_refuses_a_bare_encoder_and_a_folder_without_tokenizer(tiny_checkpoint, tiny_bert, tmp_path):
    with pytest.raises(ExportedModelError, match="holds a BertModel, not a trained text classifier"):
        EmotionPredictor.from_pretrained(tiny_bert, device="cpu")
    exported = tmp_path / "exported"
    main(["export", str(tiny_checkpoint), str(exported)])
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (exported / name).unlink(missing_ok=True)
    with pytest.raises(ExportedModelError, match="has no tokenizer files"):
        EmotionPredictor.from_pretrained(exported, device="cpu")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label,label\ni feel it,joy,fear\n", "line 1: CSV header names a column more than once: label"),
        ('text,label\n"i feel fine",joy\ni feel it, fear,joy\n', "line 3: 3 fields, but the header has 2"),
    ],
    ids=["repeated-column", "extra-field"],
)
def test_csv_rows_that_do_not_fit_the_header_are_named(content, message, tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(content)
    with pytest.raises(DataFileError, match=message):
        list(iter_split_rows(path, ("joy", "fear")))


@pytest.mark.parametrize("texts", ["dataframe", "dict"])
def test_predictor_refuses_a_table_instead_of_texts(texts, tiny_checkpoint):
    import pandas as pd

    predictor = EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    given = {"text": ["i am glad"]}
    with pytest.raises(TypeError, match=r"pass its text column, for example df\['text'\].tolist\(\)"):
        predictor(pd.DataFrame(given) if texts == "dataframe" else given)


def test_predictor_batch_size_is_checked_when_it_is_built(tiny_checkpoint):
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1, got 0"):
        EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=0)


# -- long texts, odd files and settings ----------------------------------------------------------


def test_a_huge_text_is_cut_before_it_is_tokenized_whole(tiny_checkpoint):
    tokenizer = EmotionPredictor.from_checkpoint(tiny_checkpoint, device="cpu").tokenizer
    huge = "i feel so happy today " * 1_000_000  # 22 MB on one line
    seen = []

    def recording(texts, *args, **kwargs):
        seen.append(max(map(len, [texts] if isinstance(texts, str) else texts)))
        return tokenizer(texts, *args, **kwargs)

    encoded = Encoder(recording, 64)({"text": [huge, "i am glad"]})
    expected = tokenizer(["i feel so happy today " * 20, "i am glad"], truncation=True, max_length=64)["input_ids"]
    assert encoded["input_ids"] == expected
    assert encoded["truncated"] == [True, False]
    assert max(seen) < 100_000


def test_a_tokenizer_without_a_limit_is_cut_at_the_model_positions(tiny_distilbert, data_dir, tmp_path):
    backbone = tmp_path / "no-limit"
    shutil.copytree(tiny_distilbert, backbone)
    config = json.loads((backbone / "tokenizer_config.json").read_text())
    config.pop("model_max_length")
    (backbone / "tokenizer_config.json").write_text(json.dumps(config))
    long_rows = [(" ".join(["happy"] * 200), "joy")] * 8
    data = tmp_path / "data"
    data.mkdir()
    write_semicolon_file(data / "train.txt", fixture_rows(2, seed=5) + long_rows)
    write_semicolon_file(data / "validation.txt", fixture_rows(1, seed=6) + long_rows[:2])
    args = [*trained_args(backbone, data, tmp_path), "--trainer.max_epochs", "1"]
    with pytest.warns(UserWarning, match="texts are cut at 64"):
        run(["fit", *args])
    best = run_folders(tmp_path / "runs")[-1] / "checkpoints" / "best.ckpt"
    (result,) = EmotionPredictor.from_checkpoint(best, device="cpu")([" ".join(["sad"] * 300)])
    assert result.truncated


def trained_args(backbone: Path, data: Path, root: Path) -> list[str]:
    from tests.conftest import quiet_run_args, tiny_training_args

    return [*tiny_training_args(backbone, data, epochs=1), *quiet_run_args(root / "runs")]


def test_resuming_from_weights_only_says_which_checkpoint_resumes(trained):  # noqa: F811
    folder, args = trained
    before = run_folders(folder.parent)
    message = error_of(["fit", *args, "--ckpt_path", str(best_of(trained))])
    assert message.startswith(f"--ckpt_path {best_of(trained)} holds the weights only")
    assert "--ckpt_path last" in message
    assert run_folders(folder.parent) == before


def test_a_label_that_looks_like_a_digit_is_named(tmp_path):
    path = texts_file(tmp_path, "i feel fine;²", name="train.txt")
    with pytest.raises(DataFileError, match=r"line 1: unknown label '²'"):
        list(iter_split_rows(path, ("joy", "fear")))


def test_labels_match_whatever_their_case(fit_args, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_semicolon_file(data / "train.txt", [("i am glad", "happy"), ("so sad", "Sad")] * 4)
    write_semicolon_file(data / "validation.txt", [("glad", "HAPPY"), ("sad", "sad")])
    cli = run(["fit", *fit_args, "--data.data_dir", str(data), "--model.labels", "[Happy,Sad]"])
    assert cli.model.labels == ("Happy", "Sad")


def test_a_cache_folder_that_cannot_be_made_is_named(fit_args, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EMOTION_LIGHTNING_CACHE", str(blocker / "cache"))
    message = error_of(["fit", *fit_args])
    assert message.startswith(f"cannot keep tokenized data in {blocker / 'cache'} (data.cache_dir, or $EMOTION_")
    assert run_folders(tmp_path) == []  # the failed fit left no empty run folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_split_that_is_not_a_regular_file_is_named(fit_args, data_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.mkfifo(data / "train.txt")
    shutil.copy(data_dir / "validation.txt", data / "validation.txt")
    message = error_of(["fit", *fit_args, "--data.data_dir", str(data)])
    assert message == f"{data / 'train.txt'} is not a regular file; the train split must be a file"


def test_export_into_a_link_to_an_empty_folder_fills_that_folder(tiny_checkpoint, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    main(["export", str(tiny_checkpoint), str(tmp_path / "link")])
    assert (tmp_path / "link").is_symlink()
    assert (tmp_path / "real" / "config.json").is_file()


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


# -- a full disk, an empty run, data with one label, whole-number labels, dead links, exports that collide --------


def test_a_full_disk_while_saving_leaves_the_last_checkpoint_whole_and_no_partial(fit_args, tmp_path, monkeypatch):
    real_save, saves = torch.save, []

    def disk_fills(checkpoint, file, *args, **kwargs):
        if str(file.name).endswith("last.ckpt.partial"):
            saves.append(file.name)
        if len(saves) > 1:  # the second last.ckpt (after the second epoch)
            file.write(b"\0" * 4096)  # part of it, as a filling disk takes
            raise OSError(28, "No space left on device")
        return real_save(checkpoint, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills)
    message = error_of(["fit", *fit_args, "--trainer.max_epochs", "3"])
    (folder,) = run_folders(tmp_path)
    last = folder / "checkpoints" / "last.ckpt"
    assert (
        message
        == f"could not write the checkpoint {last}: No space left on device; the last.ckpt written before is intact"
    )
    assert not list(folder.rglob("*.partial"))
    monkeypatch.undo()
    main(["fit", *fit_args, "--trainer.max_epochs", "3", "--ckpt_path", "last"])  # it resumes from it


def test_a_fit_that_trains_no_step_says_it_wrote_no_checkpoint(fit_args, capsys):
    main(["fit", *fit_args, "--trainer.max_epochs", "0"])
    printed = capsys.readouterr().err
    assert "no validation ran before the run ended at step 0); no checkpoint was written" in printed
    assert "holds the weights" not in printed


def test_training_data_with_one_label_is_refused(fit_args, data_dir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_semicolon_file(folder / "train.txt", [(text, "joy") for text, _ in fixture_rows(3, seed=1)])
    shutil.copy(data_dir / "validation.txt", folder / "validation.txt")
    message = error_of(["fit", *fit_args, "--data.data_dir", str(folder)])
    assert message == (
        f"{folder / 'train.txt'}: every training example has the label 'joy': a classifier learns nothing from "
        "one label; give examples of at least two"
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_whole_number_labels_written_as_floats_are_ids(suffix, tmp_path):
    rows = [{"text": "i am glad", "label": 1.0}, {"text": "i am sad", "label": 0.0}]
    path = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    assert list(iter_split_rows(path, ("sadness", "joy"))) == [("i am glad", 1), ("i am sad", 0)]
    path.write_text(json.dumps({"text": "i am glad", "label": 0.5}) + "\n")
    with pytest.raises(DataFileError, match=r"line 1: label id 0.5 is not a whole number"):
        list(iter_split_rows(path.rename(tmp_path / "half.jsonl"), ("sadness", "joy")))


def test_a_split_link_that_leads_nowhere_is_named(fit_args, data_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").symlink_to(data / "loop.txt")
    (data / "loop.txt").symlink_to(data / "train.txt")
    shutil.copy(data_dir / "validation.txt", data / "validation.txt")
    message = error_of(["fit", *fit_args, "--data.data_dir", str(data)])
    assert message == (
        f"{data / 'train.txt'} is a link that leads nowhere (its target is missing, or the links go round in a "
        "loop); the train split must be a file"
    )


def test_export_under_a_file_is_one_line(tiny_checkpoint, tmp_path):
    (tmp_path / "afile").write_text("")
    message = error_of(["export", str(tiny_checkpoint), str(tmp_path / "afile" / "sub")])
    under = tmp_path / "afile"
    assert message == f"cannot create the folder {under / 'sub'}: {under} is not a folder; nothing was written"


def test_two_exports_into_one_new_folder_keep_the_first_whole(tiny_checkpoint, tmp_path, monkeypatch):
    import emotion_lightning.export as export

    target, real_export = tmp_path / "exported", export.export_huggingface

    def another_export_finishes_first(model, folder):
        real_export(model, folder)
        monkeypatch.setattr(export, "export_huggingface", real_export)
        main(["export", str(tiny_checkpoint), str(target)])  # the other export, done while this one ran

    monkeypatch.setattr(export, "export_huggingface", another_export_finishes_first)
    message = error_of(["export", str(tiny_checkpoint), str(target)])
    assert message.startswith(f"{target} was written by another export meanwhile; it is kept as that one wrote it")
    assert EmotionPredictor.from_pretrained(target).labels
    assert [path.name for path in tmp_path.iterdir()] == ["exported"]  # no half-made folder left beside it
