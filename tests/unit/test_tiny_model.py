import json

from r1platform.models.tiny import ensure_tiny_model, sample_text
from r1platform.models.tokenizer import build_tokenizer
from r1platform.tasks import arithmetic


def test_tokenizer_is_char_level_with_r1_tokens():
    tok = build_tokenizer()
    text = "<|user|>12+3<|end|><|assistant|><think>ok</think><answer>15</answer>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert len(tok.encode("12+3", add_special_tokens=False)) == 4
    for t in ("<think>", "</think>", "<answer>", "</answer>", "<|end|>"):
        assert len(tok.encode(t, add_special_tokens=False)) == 1


def test_chat_template_opens_think():
    tok = build_tokenizer()
    prompt = tok.apply_chat_template(
        arithmetic.question_to_messages("1+2"), add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<|user|>1+2<|end|><|assistant|><think>"


def test_held_out_split_is_disjoint_and_deterministic():
    train = {r["question"] for r in arithmetic.build_split("train", 500, 0)}
    test = arithmetic.build_split("test", 100, 0)
    assert not train & {r["question"] for r in test}
    assert test == arithmetic.build_split("test", 100, 0)
    assert all(str(arithmetic.solve(*_parse(r["question"]))) == r["answer"] for r in test)


def _parse(q: str):
    op = "+" if "+" in q else "-"
    a, b = q.split(op)
    return int(a), op, int(b)


def test_pretraining_text_mixes_formats():
    import random

    rng = random.Random(0)
    docs = [sample_text(rng) for _ in range(400)]
    tagged = sum("</think><answer>" in d for d in docs) / len(docs)
    assert 0.3 < tagged < 0.5, "a base model: well formed only part of the time"


def test_built_model_is_a_plain_hf_directory():
    path = ensure_tiny_model()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "r1p_build.json"):
        assert (path / f).is_file(), f
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["head_dim"] >= 64


def test_build_is_deterministic_from_seed(tmp_path):
    from r1platform.models.tiny import build_tiny_model

    build_tiny_model(tmp_path / "a", seed=5, steps=15)
    build_tiny_model(tmp_path / "b", seed=5, steps=15)
    build_tiny_model(tmp_path / "c", seed=6, steps=15)
    a, b, c = ((tmp_path / x / "model.safetensors").read_bytes() for x in "abc")
    assert a == b and a != c


def test_presets_keep_tiny_as_default_and_add_a_50x_model():
    from r1platform.models.tiny import DEFAULT_PRESET, PRESETS, count_params, default_model_dir

    assert DEFAULT_PRESET == "tiny"
    assert default_model_dir().name == "tiny-r1", "tiny keeps its cache directory"
    assert default_model_dir("small").name == "tiny-r1-small"
    tiny, small = count_params("tiny"), count_params("small")
    assert tiny == 539_264
    assert small == 27_338_240
    assert 40 <= small / tiny <= 60
    assert (PRESETS["small"].num_hidden_layers, PRESETS["small"].hidden_size) == (8, 512)


def test_preset_config_keeps_vllm_cpu_head_dim():
    from r1platform.models.tiny import PRESETS, model_config

    for name, size in PRESETS.items():
        cfg = model_config(106, name)
        assert cfg.head_dim == 64 and cfg.num_attention_heads * 64 == cfg.hidden_size
        assert cfg.num_hidden_layers == size.num_hidden_layers
        assert cfg.intermediate_size == size.intermediate_size


def test_unknown_preset_is_a_clear_error():
    import pytest
    from r1platform.models.tiny import default_model_dir

    with pytest.raises(ValueError, match=r"unknown model size preset 'huge'.*small"):
        default_model_dir("huge")


def test_build_stamp_records_the_preset(tmp_path):
    from r1platform.models.tiny import build_tiny_model, count_params, is_built

    info = build_tiny_model(tmp_path / "t", seed=1, steps=1, preset="tiny")
    assert info["preset"] == "tiny" and info["params"] == count_params("tiny")
    assert is_built(tmp_path / "t", 1, "tiny") and not is_built(tmp_path / "t", 1, "small")


def test_cli_build_tiny_prints_size_and_params(tmp_path):
    from r1platform.cli import app
    from typer.testing import CliRunner

    built = ensure_tiny_model()
    res = CliRunner().invoke(app, ["model", "build-tiny", "--out", str(built)])
    assert res.exit_code == 0 and "2 layers, hidden 128, 539,264 parameters" in res.output
    res = CliRunner().invoke(
        app, ["model", "build-tiny", "--size", "huge", "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 1 and "unknown model size preset" in res.output
