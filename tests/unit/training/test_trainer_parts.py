"""Pure parts of the GRPO trainer: data position, batch layout, checkpoints, metrics log."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from r1platform.training import batching, checkpoints, metrics, sampling
from r1platform.training.cursor import DataCursor
from r1platform.training.rollout import Sample
from transformers import Qwen2Config, Qwen2ForCausalLM


def test_cursor_resumes_exactly_where_it_stopped():
    a = DataCursor(10, seed=3)
    first = a.take(4) + a.take(4)
    b = DataCursor(10, seed=3)
    b.take(4)
    c = DataCursor(10, seed=3, **b.state())
    assert c.take(4) == first[4:]


def test_cursor_covers_each_row_once_per_epoch_and_reshuffles():
    cur = DataCursor(7, seed=0)
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
    b = batching.build_batch(prompts, samples, pad_id=0)
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
    b = batching.build_batch([[1, 2, 3]], [Sample([4, 5], [0.0, 0.0], "", None)], pad_id=0)
    got = batching.completion_logits(model, b)
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
    d = checkpoints.save_checkpoint(tmp_path / "ck", model, tok, {"step": 3})
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", checkpoints.STATE_FILE} <= names
    assert checkpoints.verify_checkpoint(d)
    AutoModelForCausalLM.from_pretrained(d)  # loads as a plain HF model
    (d / "model.safetensors").write_bytes(b"torn")
    assert not checkpoints.verify_checkpoint(d)


def test_metrics_log_drops_steps_past_the_resume_point(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    log = metrics.MetricsLog(path, resume_step=0)
    for step in range(5):
        log.write({"step": step, "x": float(step)})
    log2 = metrics.MetricsLog(path, resume_step=2)
    log2.write({"step": 2, "x": 99.0})  # already there: not duplicated
    log2.write({"step": 3, "x": 3.5})
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps == [0, 1, 2, 3]
    assert json.loads(path.read_text().splitlines()[-1])["x"] == 3.5


def test_non_finite_metrics_become_null():
    assert metrics.jsonable({"step": 1, "a": float("nan"), "b": 0.1234567891}) == {
        "step": 1, "a": None, "b": 0.123457,
    }  # fmt: skip


def test_refill_replaces_tied_groups_and_keeps_batch_size():
    g = 2
    mk = lambda t: [Sample([1], [0.0], t, None)] * g  # noqa: E731
    batch = sampling.RolloutBatch(
        g, [{"i": 0}, {"i": 1}], [[1], [2]], [mk("a"), mk("b")],
        [1.0, 1.0, 0.0, 1.0], {"acc": [1.0, 1.0, 0.0, 1.0]}, keep=[False, True],
    )  # fmt: skip
    extra = sampling.RolloutBatch(
        g, [{"i": 2}, {"i": 3}], [[3], [4]], [mk("c"), mk("d")],
        [0.0, 0.0, 0.0, 1.0], {"acc": [0.0, 0.0, 0.0, 1.0]}, keep=[False, True],
    )  # fmt: skip
    out = sampling.refill(batch, extra)
    assert [r["i"] for r in out.rows] == [3, 1] and out.prompts == [[4], [2]]
    assert out.total == [0.0, 1.0, 0.0, 1.0] and out.keep == [True, True]
    assert out.per_func == {"acc": [0.0, 1.0, 0.0, 1.0]}
    assert [s.text for s in out.samples] == ["d", "d", "b", "b"]
    assert batch.keep == [False, True], "refill returns a new batch; the input is untouched"


def test_with_keep_marks_tied_groups():
    mk = [Sample([1], [0.0], "x", None)] * 2
    b = sampling.RolloutBatch(2, [{}, {}], [[1], [2]], [mk, mk], [1.0, 1.0, 0.0, 1.0], {})
    assert b.with_keep().keep == [False, True]
    assert b.flat_prompts == [[1], [1], [2], [2]] and b.gen_tokens == 4


def test_frac_zero_std_and_progress_line():
    assert metrics.group_stats([1, 1, 0, 1], 2) == 0.5
    line = metrics.progress_line({"step": 3, "reward_mean": 0.5, "eval_accuracy": float("nan")}, 10)
    assert "step 3/10" in line and "reward=0.500" in line and "eval=" not in line


def test_each_rank_takes_its_slice_of_one_global_walk():
    full = DataCursor(10, seed=5).take(4)
    slices = []
    for rank in range(2):
        cur = DataCursor(10, seed=5)
        slices.append(cur.take_slice(4, rank, 2))
        assert cur.state() == {"epoch": 0, "pos": 4} and cur.seen == 4  # all ranks advance by 4
    assert slices == [full[:2], full[2:]]


def test_restore_position_refuses_per_worker_layouts():
    import pytest

    cur = DataCursor(10, seed=0)
    state = {"data": [{"epoch": 0, "pos": 1}, {"epoch": 0, "pos": 2}], "rng": []}
    with pytest.raises(checkpoints.TrainingAborted, match="per-worker data positions"):
        checkpoints.restore_position(state, cur, rank=0)
    rng = checkpoints.rng_state()
    checkpoints.restore_position(
        {"data": [{"epoch": 2, "pos": 3}], "data_layout": "global", "rng": [rng]}, cur, rank=1
    )
    assert cur.state() == {"epoch": 2, "pos": 3}
