"""Pure parts of the GRPO trainer: data position, batch layout, checkpoints, metrics log."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from r1platform.training import trainer
from r1platform.training.rollout import Sample
from transformers import Qwen2Config, Qwen2ForCausalLM


def test_cursor_resumes_exactly_where_it_stopped():
    a = trainer.DataCursor(10, seed=3)
    first = a.take(4) + a.take(4)
    b = trainer.DataCursor(10, seed=3)
    b.take(4)
    c = trainer.DataCursor(10, seed=3, **b.state())
    assert c.take(4) == first[4:]


def test_cursor_covers_each_row_once_per_epoch_and_reshuffles():
    cur = trainer.DataCursor(7, seed=0)
    epoch0 = cur.take(7)
    epoch1 = cur.take(7)
    assert sorted(epoch0) == sorted(epoch1) == list(range(7))
    assert epoch0 != epoch1 and cur.state() == {"epoch": 1, "pos": 7}


def test_build_batch_aligns_logits_with_completion_tokens():
    prompts = [[5, 6, 7], [8]]
    samples = [
        Sample([1, 2], [-0.1, -0.2], "x", "stop"),
        Sample([3, 4, 9], [-1, -2, -3], "y", None),
    ]
    b = trainer.build_batch(prompts, samples, pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 2], [8, 3, 4, 9, 0]]
    assert b.mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    # logit at position p predicts token p+1
    for i in range(2):
        for t in range(int(b.mask[i].sum())):
            assert b.input_ids[i, b.positions[i, t] + 1] == b.completion_ids[i, t]
    assert b.old_logp[1].tolist() == [-1, -2, -3]
    assert b.num_tokens == 9


def test_completion_logits_match_a_full_forward():
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=1, num_key_value_heads=1, head_dim=16)
    )  # fmt: skip
    b = trainer.build_batch([[1, 2, 3]], [Sample([4, 5], [0.0, 0.0], "", None)], pad_id=0)
    got = trainer.completion_logits(model, b)
    full = model(input_ids=torch.tensor([[1, 2, 3, 4, 5]])).logits
    assert torch.allclose(got[0], full[0, 2:4], atol=1e-6)


def test_checkpoint_is_an_hf_dir_with_a_manifest(tmp_path: Path):
    from r1platform.models.tokenizer import build_tokenizer
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer()
    model = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                    num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                    head_dim=16)
    )  # fmt: skip
    d = trainer.save_checkpoint(tmp_path / "ck", model, tok, {"step": 3})
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", trainer.STATE_FILE} <= names
    assert trainer.verify_checkpoint(d)
    AutoModelForCausalLM.from_pretrained(d)  # loads as a plain HF model
    (d / "model.safetensors").write_bytes(b"torn")
    assert not trainer.verify_checkpoint(d)


def test_metrics_log_drops_steps_past_the_resume_point(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    log = trainer.MetricsLog(path, resume_step=0)
    for step in range(5):
        log.write({"step": step, "x": float(step)})
    log2 = trainer.MetricsLog(path, resume_step=2)
    log2.write({"step": 2, "x": 99.0})  # already there: not duplicated
    log2.write({"step": 3, "x": 3.5})
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps == [0, 1, 2, 3]
    assert json.loads(path.read_text().splitlines()[-1])["x"] == 3.5


def test_non_finite_metrics_become_null():
    assert trainer._jsonable({"step": 1, "a": float("nan"), "b": 0.1234567891}) == {
        "step": 1, "a": None, "b": 0.123457,
    }  # fmt: skip


def test_refill_replaces_tied_groups_and_keeps_batch_size():
    g = 2
    mk = lambda t: [Sample([1], [0.0], t, None)] * g  # noqa: E731
    groups, rows, prompts = [mk("a"), mk("b")], [{"i": 0}, {"i": 1}], [[1], [2]]
    total, per = [1.0, 1.0, 0.0, 1.0], {"acc": [1.0, 1.0, 0.0, 1.0]}
    keep = [False, True]
    out = trainer._refill(
        g, groups, rows, prompts, total, per, keep,
        [mk("c"), mk("d")], [{"i": 2}, {"i": 3}], [[3], [4]],
        [0.0, 0.0, 0.0, 1.0], {"acc": [0.0, 0.0, 0.0, 1.0]}, [False, True],
    )  # fmt: skip
    groups, rows, prompts, total, per, keep = out
    assert [r["i"] for r in rows] == [3, 1] and prompts == [[4], [2]]
    assert total == [0.0, 1.0, 0.0, 1.0] and keep == [True, True]


def test_frac_zero_std_and_progress_line():
    assert trainer.group_stats([1, 1, 0, 1], 2) == 0.5
    line = trainer.progress_line({"step": 3, "reward_mean": 0.5, "eval_accuracy": float("nan")}, 10)
    assert "step 3/10" in line and "reward=0.500" in line and "eval=" not in line
