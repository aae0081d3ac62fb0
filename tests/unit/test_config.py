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
