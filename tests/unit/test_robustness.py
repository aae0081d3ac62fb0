"""Malformed configuration and input (issue 13 item 10): each gives one clear error that names
the file, line or item, and whatever was valid is kept."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from r1platform.config import ConfigError, load_settings
from r1platform.k8s.render import load_values
from r1platform.pools.errors import PoolsConfigError
from r1platform.pools.fleet import load_pools
from r1platform.pools.workloads import load_workloads
from r1platform.training.datasets import DatasetError, load_prompts
from r1platform.training.rewards import RewardError, RewardFunc, RewardSpecError, score
from r1platform.training.rewards import load_reward_funcs as load_rewards

MALFORMED = {
    "unclosed flow": ("models:\n  tiny-r1:\n    max_model_len: [\n", "line 4"),
    "tab indent": ("models:\n  m:\n\tpath: x\n", "line 3"),
    "bad mapping": ("a: b: c\n", "line 1"),
    "unclosed quote": ('serve:\n  host: "127.0.0.1\n', "line"),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_settings_yaml_names_file_and_line(tmp_path, monkeypatch, name):
    text, where = MALFORMED[name]
    path = _write(tmp_path, text)
    monkeypatch.setenv("R1P_CONFIG", str(path))
    with pytest.raises(ConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "invalid YAML" in msg and where in msg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- a\n- b\n", "must be a mapping"),
        ("models: 3\n", "models"),
        ("models:\n  m:\n    max_model_len: lots\n", "models.m.max_model_len"),
        ("serve:\n  port: 70000\n", "serve.port"),
        ("modles: {}\n", "modles"),
    ],
)
def test_wrong_settings_name_the_setting(tmp_path, monkeypatch, text, needle):
    monkeypatch.setenv("R1P_CONFIG", str(_write(tmp_path, text)))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("loader", [load_pools, load_workloads])
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_pools_and_workloads_yaml_name_file_and_line(tmp_path, loader, name):
    text, where = MALFORMED[name]
    path = _write(tmp_path, text)
    with pytest.raises(PoolsConfigError) as err:
        loader(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "malformed YAML" in msg and where in msg


def test_bad_pool_and_workload_items_are_named(tmp_path):
    pools = "pools:\n  - {name: a, gpu: L4, nodes: 1, gpus_per_node: 1}\n  - {name: b, gpu: NOPE}\n"
    with pytest.raises(PoolsConfigError) as err:
        load_pools(_write(tmp_path, pools))
    assert "pools[1]" in str(err.value) or "'b'" in str(err.value) or "b:" in str(err.value)
    with pytest.raises(PoolsConfigError) as err:
        load_workloads(_write(tmp_path, "serving: 3\n"))
    assert "serving" in str(err.value)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_helm_values_name_file_and_line(tmp_path, name):
    text, where = MALFORMED[name]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_values(path)
    assert (
        str(path) in str(err.value) and "Helm values" in str(err.value) and where in str(err.value)
    )
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_values(_write(tmp_path, "- pools\n"))


# ---- datasets ----------------------------------------------------------------------------------
def test_malformed_dataset_rows_are_skipped_by_reason_and_good_rows_all_kept(tmp_path):
    good = [{"prompt": f"{i}+1", "answer": str(i + 1)} for i in range(5)]
    bad = [
        "not json {",
        json.dumps([1, 2]),
        json.dumps({"prompt": "", "answer": "1"}),
        json.dumps({"prompt": "1+1"}),
        json.dumps({"prompt": [{"role": "robot", "content": "x"}], "answer": "1"}),
        json.dumps({"prompt": "1+1", "answer": True}),
    ]
    lines = [json.dumps(r) for r in good[:3]] + bad + [json.dumps(r) for r in good[3:]]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    got = load_prompts(str(path))
    assert [r["answer"] for r in got.rows] == [r["answer"] for r in good]
    assert got.skipped == len(bad)
    assert set(got.skip_reasons) >= {"empty prompt", "missing answer", "malformed prompt messages"}


def test_a_dataset_with_no_valid_row_is_one_error_naming_file_and_reasons(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "1+1"}\n{"prompt": ""}\n')
    with pytest.raises(DatasetError) as err:
        load_prompts(str(path))
    msg = str(err.value)
    assert str(path) in msg and "missing answer" in msg and "\n" not in msg


# ---- reward functions ------------------------------------------------------------------------------
def _raises(completions, **_):
    raise KeyError("solution")


def _hangs(completions, **_):
    time.sleep(3600)


def _ones(completions, **_):
    return [1.0] * len(completions)


def _strings(completions, **_):
    return ["high"] * len(completions)


ROWS = [{"prompt": "1+1", "answer": "2"}] * 2
COMPLETIONS = ["</think><answer>2</answer>"] * 2


@pytest.mark.parametrize("timeout_s", [None, 30.0])
def test_a_raising_reward_is_one_error_naming_it(timeout_s):
    funcs = [RewardFunc("ones", _ones), RewardFunc("judge", _raises, timeout_s=timeout_s)]
    with pytest.raises(RewardError) as err:
        score(COMPLETIONS, ROWS, funcs)
    assert "'judge'" in str(err.value) and "KeyError" in str(err.value)


def test_a_hanging_reward_is_killed_at_its_timeout_and_named():
    t = time.monotonic()
    with pytest.raises(RewardError) as err:
        score(COMPLETIONS, ROWS, [RewardFunc("slowpoke", _hangs, timeout_s=1.0)])
    assert time.monotonic() - t < 10
    assert "'slowpoke'" in str(err.value) and "timeout_s" in str(err.value)


def test_an_isolated_reward_returns_the_same_values_as_in_process():
    inproc = score(COMPLETIONS, ROWS, [RewardFunc("ones", _ones)])
    forked = score(COMPLETIONS, ROWS, [RewardFunc("ones", _ones, timeout_s=30)])
    assert inproc == forked


def test_a_reward_returning_non_numbers_is_named():
    with pytest.raises(RewardError, match=r"'words'.*'high'"):
        score(COMPLETIONS, ROWS, [RewardFunc("words", _strings)])


@pytest.mark.parametrize("timeout", [0, -1, "soon", True, float("inf")])
def test_bad_reward_timeout_spec_is_named(timeout):
    with pytest.raises(RewardSpecError, match="timeout_s"):
        load_rewards([{"spec": "accuracy", "timeout_s": timeout}])


def test_reward_timeout_spec_is_kept():
    (f,) = load_rewards([{"spec": "accuracy", "timeout_s": 2.5}])
    assert f.timeout_s == 2.5
