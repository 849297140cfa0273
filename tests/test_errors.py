"""Bad input from the command line: one clear message naming the argument, file or split, no traceback."""

from __future__ import annotations

import re

import pytest

from emotion_lightning.cli import main


def exit_message(args: list[str]) -> str:
    """Run the console script's main(); return the one-line message it exits with."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert isinstance(exit_info.value.code, str), f"exit status {exit_info.value.code!r} instead of a message"
    assert exit_info.value.code.startswith("emotion-lightning: error: ")
    return exit_info.value.code


HINT = "; `emotion-lightning fit --help` lists the settings"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--model.learnig_rate", "1e-3"],
            "unknown setting --model.learnig_rate (did you mean --model.learning_rate?)",
        ),
        (["--data.batch_size", "sixteen"], "--data.batch_size takes int, not 'sixteen'"),
        (["--trainer.max_epochs", "many"], "--trainer.max_epochs takes int, not 'many'"),
        (["--trainer.max_epoch", "3"], "unknown setting --trainer.max_epoch (did you mean --trainer.max_epochs?)"),
        (["-c", "nope.yaml"], "-c / --config: File does not exist"),
    ],
    ids=["unknown-key", "wrong-type", "wrong-trainer-type", "unknown-trainer-key", "missing-config"],
)
def test_a_setting_mistake_is_one_line_with_the_closest_name(arguments, message, capsys):
    error = exit_message(["fit", *arguments]).removeprefix("emotion-lightning: error: ")
    assert error.startswith(message), error
    assert "\n" not in error
    assert "usage:" not in capsys.readouterr().err  # not a page of usage before it


def test_unknown_key_in_a_config_file_names_it(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  learnin_rate: 0.001\n")
    assert exit_message(["fit", "-c", str(config)]) == (
        "emotion-lightning: error: unknown setting --model.learnin_rate (did you mean --model.learning_rate?) in a "
        f"config file{HINT}"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model.max_length", "1"], r"model.max_length must be an integer of at least 2 \(room for the \[CLS\]"),
        (["--data.batch_size", "0"], "data.batch_size must be an integer of at least 1, got 0"),
        (["--model.learning_rate", "0"], "model.learning_rate must be more than 0, got 0.0"),
        (["--resume.every_n_train_steps", "0"], "resume.every_n_train_steps must be an integer of at least 1"),
    ],
    ids=["max-length", "batch-size", "learning-rate", "checkpoint-interval"],
)
def test_values_that_cannot_work_are_named(fit_args, arguments, message):
    assert re.search(message, exit_message(["fit", *fit_args, *arguments]))


def test_unreachable_backbone_says_what_was_tried_and_how_to_run_offline(fit_args):
    # HF_HUB_OFFLINE=1 (set for every test) makes the Hub unreachable at once.
    message = exit_message(["fit", *fit_args, "--model.backbone", "someone/no-such-model"])
    assert "Could not load backbone 'someone/no-such-model': it is not a local folder" in message
    assert "Hugging Face Hub could not provide it" in message
    for remedy in ("local model folder as --model.backbone", "HF_HUB_OFFLINE=1", "--data.data_dir"):
        assert remedy in message


def test_data_dir_without_split_files_lists_what_was_expected_and_found(fit_args, tmp_path):
    folder = tmp_path / "wrong-names"
    folder.mkdir()
    (folder / "training.txt").write_text("i am happy;joy\n")
    (folder / "dev.txt").write_text("i am sad;sadness\n")
    message = exit_message(["fit", *fit_args, "--data.data_dir", str(folder)])
    assert "fit needs the train and validation split: " in message
    assert "(expected train.*, validation.*" in message and "found dev.txt, training.txt" in message
    assert "--data.train_file or --data.validation_file" in message


def test_missing_data_dir_is_named(fit_args, tmp_path):
    message = exit_message(["fit", *fit_args, "--data.data_dir", str(tmp_path / "nowhere")])
    assert f"data_dir {tmp_path / 'nowhere'} is not a folder" in message
