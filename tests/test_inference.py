"""Prediction's reduced-precision path: a copy of the weights made once and again when they change, in bf16 or with
int8 linear layers, compiled on request (or in the background), the same labels as the eager copy; a call's unsure
texts redone in fp32; the CPU facts its defaults depend on."""

from __future__ import annotations

import pytest
import torch

from emotion_lightning import EmotionClassifier, EmotionPredictor
from emotion_lightning import inference as inference_module
from emotion_lightning import model as model_module
from emotion_lightning.batches import PadBatch
from emotion_lightning.cpu import cgroup_cpu_quota, cpu_kind, usable_cores
from emotion_lightning.errors import SettingError
from emotion_lightning.inference import check_switch_setting, runs_int8
from emotion_lightning.int8 import Int8Linear
from emotion_lightning.packing import ONE_LENGTH_BATCH_FROM, PackWherePaddingWastes, like_length_batches
from tests.conftest import fixture_rows

TEXTS = [text for text, _ in fixture_rows(8, seed=3)]


@pytest.fixture
def model(tiny_bert):
    torch.manual_seed(0)
    return EmotionClassifier(backbone=str(tiny_bert))


def test_the_copy_is_made_once_and_again_when_the_weights_change(model):
    predictor = EmotionPredictor(model, precision="bf16-mixed", compile=False, int8=False)
    predictor(TEXTS)
    made = model.inference_copy
    assert made is not None and made.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in made.model.parameters())
    predictor(TEXTS[:3])
    assert model.inference_copy is made  # the same weights: the same copy

    with torch.no_grad():  # as an optimizer step changes them: in place
        model.model.classifier.weight.mul_(-1)
    flipped = predictor.predict_probabilities(TEXTS)
    assert model.inference_copy is not made
    in_fp32 = EmotionPredictor(model, precision="32-true").predict_probabilities(TEXTS)
    assert (flipped.argmax(1) == in_fp32.argmax(1)).all()  # the new weights answer, not the old copy's

    model.load_state_dict(EmotionClassifier(backbone=model.hparams.backbone).state_dict())
    predictor(TEXTS)
    assert model.inference_copy is not made


def test_fp32_needs_no_copy(model):
    EmotionPredictor(model, precision="32-true")(TEXTS)
    assert model.inference_copy is None


def test_a_compilation_in_the_background_answers_as_the_eager_copy(model, monkeypatch):
    # "auto" compiles where measured faster: taken to be this CPU here, so that the path runs.
    monkeypatch.setattr(inference_module, "COMPILE_PAYS_ON", (cpu_kind(),))
    eager = EmotionPredictor(model, precision="bf16-mixed", compile=False).predict_probabilities(TEXTS)
    predictor = EmotionPredictor(model, precision="bf16-mixed", compile="auto")
    first = predictor.predict_probabilities(TEXTS)  # answered at once, by the eager copy
    torch.testing.assert_close(first, eager)
    predictor.warm_up()  # returns once the compiled code runs
    copy = model.inference_copy
    assert copy.compiled
    compiled = predictor.predict_probabilities(TEXTS + ["one more text of another length than the others"])
    torch.testing.assert_close(compiled[: len(TEXTS)], eager, atol=2e-2, rtol=0)  # bf16's rounding, in another order
    assert model.inference_copy is copy


def test_auto_leaves_the_copy_eager_where_compiling_was_not_measured_faster(model, monkeypatch):
    monkeypatch.setattr(inference_module, "COMPILE_PAYS_ON", ())
    predictor = EmotionPredictor(model, precision="bf16-mixed")
    predictor.warm_up()
    assert not model.inference_copy.compiled


@pytest.mark.parametrize(("given", "taken"), [("auto", "auto"), ("TRUE", True), ("false", False), (True, True)])
def test_compile_and_int8_are_auto_true_or_false(given, taken):
    assert check_switch_setting(given, "compile") == taken


@pytest.mark.parametrize("setting", ["compile", "int8"])
@pytest.mark.parametrize("given", ["maybe", 1, None])
def test_any_other_compile_or_int8_setting_is_refused_by_name(setting, given, model):
    with pytest.raises(SettingError, match=rf"^{setting} must be auto, true or false, got"):
        EmotionPredictor(model, **{setting: given})


def test_an_int8_linear_layer_computes_what_the_fp32_one_does(model):
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48)
    inputs = torch.randn(3, 7, 64)
    inputs[0, 0] *= 50  # one token of large values: its scale is its own, not the others'
    expected = linear(inputs).detach()
    got = Int8Linear(linear)(inputs)
    assert got.shape == expected.shape and got.dtype == torch.float32
    error = (got - expected).norm(dim=-1) / expected.norm(dim=-1)
    assert error.max() < 0.02, error.max()  # int8's rounding: about 1% of each output row


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_distilbert"])
def test_the_int8_copy_quantizes_the_transformer_and_keeps_the_head(backbone, request):
    torch.manual_seed(0)
    model = EmotionClassifier(backbone=str(request.getfixturevalue(backbone)))
    predictor = EmotionPredictor(model, precision="bf16-mixed", compile=False, int8=True)
    probabilities = predictor.predict_probabilities(TEXTS)
    copy = model.inference_copy
    assert copy.int8 and predictor.runs_int8
    base = copy.model.base_model
    kept = {id(module) for module in getattr(base, "pooler", torch.nn.Module()).modules()}
    in_transformer = [module for module in base.modules() if id(module) not in kept]
    assert sum(isinstance(module, Int8Linear) for module in in_transformer) >= 6  # a layer: q, k, v, out, two FFN
    assert not any(isinstance(module, torch.nn.Linear) for module in in_transformer)
    in_base = {id(module) for module in base.modules()}
    head = [module for module in copy.model.modules() if id(module) not in in_base]
    assert any(isinstance(module, torch.nn.Linear) for module in head)  # the head (and pooler) as they were
    in_fp32 = EmotionPredictor(model, precision="32-true").predict_probabilities(TEXTS)
    torch.testing.assert_close(probabilities, in_fp32, atol=0.05, rtol=0)
    assert (probabilities.argmax(1) == in_fp32.argmax(1)).all()
    EmotionPredictor(model, precision="bf16-mixed", compile=False, int8=False)(TEXTS)
    assert not model.inference_copy.int8  # another setting: another copy


def test_int8_auto_follows_the_kinds_of_cpu_where_it_was_measured_faster(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(inference_module, "INT8_PAYS_ON", (cpu_kind(),))
    assert runs_int8("auto", cpu) and not runs_int8("auto", gpu) and not runs_int8(False, cpu)
    monkeypatch.setattr(inference_module, "INT8_PAYS_ON", ())
    assert not runs_int8("auto", cpu) and runs_int8(True, cpu)
    with pytest.raises(SettingError, match=r"^model.int8 true: int8 prediction runs on a CPU, and this model is on"):
        runs_int8(True, gpu, "model.int8")


def test_a_predictor_refuses_int8_true_off_the_cpu_when_made(model):
    with pytest.raises(SettingError, match=r"^int8 true: int8 prediction runs on a CPU, and this model is on meta"):
        EmotionPredictor(model.to("meta"), int8=True)


@pytest.mark.parametrize("int8", [False, True])
def test_a_calls_unsure_texts_are_redone_in_fp32(model, monkeypatch, int8):
    in_fp32 = EmotionPredictor(model, precision="32-true").predict_probabilities(TEXTS)
    monkeypatch.setattr(model_module, "REDO_IN_FP32_WITHIN", 2.0)  # every text is unsure
    redone = EmotionPredictor(model, precision="bf16-mixed", int8=int8).predict_probabilities(TEXTS)
    torch.testing.assert_close(redone, in_fp32, atol=1e-6, rtol=0)
    monkeypatch.setattr(model_module, "REDO_IN_FP32_WITHIN", 0.0)  # none is
    reduced = EmotionPredictor(model, precision="bf16-mixed", int8=int8).predict_probabilities(TEXTS)
    assert not torch.equal(reduced, in_fp32)  # (the reduced-precision answers, then)


def test_like_length_texts_are_padded_and_texts_of_every_length_packed(tiny_bert):
    tokenizer = EmotionClassifier(backbone=str(tiny_bert)).tokenizer
    collate = PackWherePaddingWastes(PadBatch(tokenizer, 128), tokenizer.pad_token_id)
    like = {"input_ids": [[2] * 30, [2] * 31, [2] * 29], "index": [0, 1, 2]}
    unlike = {"input_ids": [[2] * 60, [2] * 5, [2] * 4, [2] * 6], "index": [0, 1, 2, 3]}
    assert "input_ids" in collate(like) and "packed" not in collate(like)  # 3 x 32 tokens for 90
    assert "packed" in collate(unlike)  # 4 x 64 tokens for 75: mostly padding


def test_texts_of_one_length_are_batched_alone_unpadded_where_enough_share_it(tiny_bert):
    many = ONE_LENGTH_BATCH_FROM + 3
    lengths = [9] * many + [7, 6, 6, 5]  # indices 0..many-1 share length 9; the few others are mixed
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches = like_length_batches(order, lengths, batch_size=8)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))  # every text once
    alone = [batch for batch in batches if all(lengths[i] == 9 for i in batch)]
    assert sum(map(len, alone)) == many and all(len(batch) <= 8 for batch in batches)
    assert [lengths[i] for i in batches[-1]] == [7, 6, 6, 5]  # the rest together, sorted
    tokenizer = EmotionClassifier(backbone=str(tiny_bert)).tokenizer
    collate = PackWherePaddingWastes(PadBatch(tokenizer, 128), tokenizer.pad_token_id)
    batch = collate({"input_ids": [[2] * 9, [3] * 9], "index": [0, 1]})
    assert batch["input_ids"].shape == (2, 9) and batch["attention_mask"].all()  # no padding, nothing masked


def test_a_call_of_many_lengths_predicts_what_padded_batches_give(model):
    texts = [" ".join([text] * (1 + number % 3)) for number, (text, _) in enumerate(fixture_rows(30, seed=2))]
    texts += [texts[0]] * ONE_LENGTH_BATCH_FROM  # one length shared by enough texts to be batched alone
    by_length = EmotionPredictor(model, precision="32-true").predict_probabilities(texts)
    padded = EmotionPredictor(model, precision="32-true", pack=False).predict_probabilities(texts)
    torch.testing.assert_close(by_length, padded, atol=1e-5, rtol=0)


def test_the_cores_a_process_may_use_follow_its_cgroup_quota(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(v2) == 1.5
    assert usable_cores(v2) == min(2, usable_cores(tmp_path / "none"))
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(v1) is None


def test_the_kind_of_cpu_comes_from_its_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_kind(cpuinfo) == "amx"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_kind(cpuinfo) == "avx512_bf16"
    cpuinfo.write_text("flags\t\t: fpu avx2\n")
    assert cpu_kind(cpuinfo) == "other"
    assert cpu_kind(tmp_path / "absent") == "other"


def test_predict_takes_compile_and_int8_from_its_command_line_not_the_checkpoint(tiny_checkpoint, fit_args, tmp_path):
    import csv

    from emotion_lightning.cli import main
    from tests.test_first_hour import one_line_error

    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"{text}\n" for text in TEXTS))
    written = {}
    for compile, int8 in (("false", "false"), ("true", "false"), ("false", "true")):  # the checkpoint says "auto"
        output = tmp_path / f"compile-{compile}-int8-{int8}.csv"
        args = [
            "--ckpt_path",
            str(tiny_checkpoint),
            "--data.predict_file",
            str(texts),
            "--trainer.precision",
            "bf16-mixed",
        ]
        args += ["--model.compile", compile, "--model.int8", int8, "--prediction_writer.output_file", str(output)]
        main(["predict", *fit_args, *args])
        with output.open(newline="") as file:
            written[compile, int8] = list(csv.DictReader(file))
    eager, compiled, int8 = written["false", "false"], written["true", "false"], written["false", "true"]
    assert [row["label"] for row in compiled] == [row["label"] for row in eager] == [row["label"] for row in int8]
    for one, other in [*zip(compiled, eager, strict=True), *zip(int8, eager, strict=True)]:
        assert abs(float(one["score"]) - float(other["score"])) < 3e-2  # bf16's (int8's) rounding
    for setting in ("--model.compile", "--model.int8"):
        message = one_line_error(["predict", *fit_args, "--ckpt_path", str(tiny_checkpoint), setting, "maybe"])
        assert setting in message and "maybe" in message


def test_predict_runs_in_the_precision_the_predictor_picks_unless_told(tiny_checkpoint, fit_args, capsys):
    from emotion_lightning.cli import main
    from emotion_lightning.precision import inference_precision, prediction_precision

    picked = inference_precision(torch.device("cpu"))
    assert prediction_precision(None, "cpu") == picked
    assert prediction_precision("32-true", "cpu") == "32-true"
    with pytest.raises(SystemExit):
        main(["predict", *fit_args, "--ckpt_path", str(tiny_checkpoint), "--text", "hi", "--print_config"])
    assert f"precision: {picked}" in capsys.readouterr().out


def test_predictors_that_share_a_model_each_keep_their_compile_setting(model):
    eager = EmotionPredictor(model, precision="bf16-mixed", compile=False)
    EmotionPredictor(model, precision="bf16-mixed", compile=True)  # made after, never called
    eager(TEXTS)
    assert model.inference_copy.compile is False
