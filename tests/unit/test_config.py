import subprocess
import sys

import pytest
from r1platform.config import ConfigError, load_settings


def test_env_prefix_and_nested_delimiter(monkeypatch):
    monkeypatch.setenv("R1P_SERVE__PORT", "8123")
    monkeypatch.setenv("R1P_API_KEYS", "k1, k2")
    s = load_settings()
    assert s.serve.port == 8123 and s.serve.api_keys == ["k1", "k2"]


def test_yaml_file_via_r1p_config(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models:\n  a: {max_model_len: 99}\n  b: {accelerator_type: L4}\n")
    monkeypatch.setenv("R1P_CONFIG", str(cfg))
    s = load_settings()
    assert s.models["a"].max_model_len == 99 and s.models["b"].accelerator_type == "L4"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"R1P_SERVE__PORT": "http"}, "serve.port"),
        ({"R1P_SERVE__PLACEMENT": "moon"}, "serve.placement"),
    ],
)
def test_invalid_value_is_one_line_naming_the_field(monkeypatch, env, field):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert field in str(e.value) and "\n" not in str(e.value)


def test_min_above_max_replicas_is_rejected(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models:\n  a: {autoscaling: {min_replicas: 3, max_replicas: 1}}\n")
    monkeypatch.setenv("R1P_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"models\.a\.autoscaling"):
        load_settings()


def test_cli_exits_nonzero_with_one_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("serve: {port: -1}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "r1platform.cli", "up", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "serve.port" in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("yaml_text", "path"),
    [
        ("models:\n  tiny-r1: {some_typo: 2}\n", "models.tiny-r1.some_typo"),
        ("models:\n  a: {autoscaling: {max_replica: 2}}\n", "models.a.autoscaling.max_replica"),
        ("serve: {hots: 0.0.0.0}\n", "serve.hots"),
        ("modles: {}\n", "modles"),
    ],
)
def test_unknown_key_at_any_level_names_its_full_path(tmp_path, monkeypatch, yaml_text, path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    monkeypatch.setenv("R1P_CONFIG", str(cfg))
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value) == f"invalid setting {path}: Extra inputs are not permitted"


def test_unknown_nested_key_from_env_is_refused(monkeypatch):
    monkeypatch.setenv("R1P_SERVE__REQUEST_TIMEOUT", "5")
    with pytest.raises(ConfigError, match=r"serve\.request_timeout: Extra inputs"):
        load_settings()


def test_every_shipped_settings_file_loads(monkeypatch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    # Settings documents sit at the top of configs/; subfolders hold pools, workloads, values.
    files = sorted(root.glob("configs/*.yaml"))
    assert files, "no settings files found under configs/"
    for f in files:
        monkeypatch.setenv("R1P_CONFIG", str(f))
        assert load_settings().models, f


def test_engine_extra_accepts_vllm_engine_arguments(monkeypatch):
    from r1platform.config import ModelSettings

    ms = ModelSettings(engine_extra={"enable_prefix_caching": True, "block_size": 32})
    assert ms.engine_extra == {"enable_prefix_caching": True, "block_size": 32}
    assert ModelSettings.model_validate(ms.model_dump()) == ms  # survives the trip to replicas


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("max_num_seq", "unknown vLLM engine argument 'max_num_seq' (did you mean 'max_num_seqs'"),
        ("enable_prefix_cache", "did you mean 'enable_prefix_caching'"),
        ("no_such_thing_at_all", "unknown vLLM engine argument 'no_such_thing_at_all'"),
        ("tensor_parallel_size", "use the model's `tensor_parallel_size` field"),
        ("dtype", "use the model's `dtype` field"),
        ("kv_cache_dtype", "use the model's `kv_cache_dtype` field"),
        ("pipeline_parallel_size", "use the model's `pipeline_parallel_size` field"),
        ("model", "use the model's `path` field"),
        ("_api_process_count", "private"),
    ],
)
def test_engine_extra_refuses_bad_keys_by_name(tmp_path, monkeypatch, key, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"models:\n  a: {{engine_extra: {{{key}: 1}}}}\n")
    monkeypatch.setenv("R1P_CONFIG", str(cfg))
    with pytest.raises(ConfigError) as e:
        load_settings()
    msg = str(e.value)
    assert msg.startswith("invalid setting models.a.engine_extra: ") and expected in msg, msg
    assert "\n" not in msg


def test_engine_arg_names_match_vllm_async_engine_args():
    import dataclasses

    from r1platform.vllm_args import OWNED_ENGINE_ARGS, engine_arg_names
    from vllm.engine.arg_utils import AsyncEngineArgs

    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert engine_arg_names() == fields
    assert set(OWNED_ENGINE_ARGS) <= fields, "an owned name that vLLM does not have is stale"


def test_engine_extra_reaches_async_engine_args(tmp_path):
    from r1platform.config import ModelSettings
    from r1platform.serving.engine_args import engine_args

    ms = ModelSettings(max_num_seqs=7, engine_extra={"enable_prefix_caching": False})
    args = engine_args("m", ms, tmp_path)
    assert args.enable_prefix_caching is False and args.max_num_seqs == 7
    assert args.served_model_name == ["m"]
