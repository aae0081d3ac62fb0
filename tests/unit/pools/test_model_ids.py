"""HF model ids everywhere: workloads, fit and settings take the R1 family's HF ids in any case
next to the short names and a local dir with config.json; an unknown id lists close matches."""

from __future__ import annotations

import json

import pytest
from r1platform.config import ModelSettings
from r1platform.pools.errors import PoolsConfigError
from r1platform.pools.fit import model_spec
from r1platform.pools.model_configs import HF_IDS
from r1platform.pools.workloads import parse_workloads

SLO = {"ttft_p99_s": 5, "tpot_p99_s": 0.2}


def _serving(model: str) -> dict:
    row = {"name": "d", "model": model, "request_rate": 1, "avg_input_tokens": 100}
    return {"serving": [{**row, "avg_output_tokens": 100, "slo": SLO}]}


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("deepseek-ai/DeepSeek-R1", "deepseek-r1"),
        ("deepseek-ai/DeepSeek-V3", "deepseek-r1"),
        ("DEEPSEEK-AI/deepseek-v3", "deepseek-r1"),
        *[(hf, key) for key, hf in HF_IDS.items()],
        *[(hf.upper(), key) for key, hf in HF_IDS.items()],
        ("R1-Distill-Qwen-7B", "r1-distill-qwen-7b"),
    ],
)
def test_hf_ids_and_short_names_resolve_in_workloads_and_fit(given, key):
    assert model_spec(given).name == key
    assert parse_workloads(_serving(given)).serving[0].model == given


def test_a_local_dir_with_config_json(tmp_path):
    cfg = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 512,
        "vocab_size": 1000,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert model_spec(str(tmp_path)).layers == 2
    assert parse_workloads(_serving(str(tmp_path))).serving
    assert ModelSettings(path=str(tmp_path)).path == str(tmp_path)


def test_unknown_id_lists_close_matches_everywhere():
    with pytest.raises(PoolsConfigError, match="did you mean deepseek-ai/DeepSeek-R1-Distill-Qwen"):
        parse_workloads(_serving("deepseek-ai/DeepSeek-R1-Distil-Qwen-7B"))
    with pytest.raises(ValueError, match="did you mean deepseek-ai/DeepSeek-R1-Distill-Llama-70B"):
        ModelSettings(path="deepseek-ai/DeepSeek-R1-Distill-Lama-70B")


def test_settings_canonicalise_the_hf_id():
    assert (
        ModelSettings(path="r1-distill-llama-8b").path == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    )
    assert ModelSettings(path="deepseek-ai/deepseek-v3").path == "deepseek-ai/DeepSeek-V3"
