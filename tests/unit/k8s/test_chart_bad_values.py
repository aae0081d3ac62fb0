"""Bad values fail at `helm install` (schema or template), with a message naming the field."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helm_python.errors import HelmError
from pydantic import ValidationError
from r1platform.config import Settings
from r1platform.k8s.render import CHART_DIR, render_manifests, render_objects, settings_document

BASE: dict[str, Any] = {
    "pools": [
        {
            "name": "l4",
            "gpu": "L4",
            "gpusPerNode": 1,
            "replicas": 1,
            "minReplicas": 0,
            "maxReplicas": 2,
        }
    ],
    "models": [{"id": "m", "gpuTypes": ["L4"], "maxModelLen": 4096}],
}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(v: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = v
        for p in parents:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        node[last] = value

    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(v: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = v
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        del node[last]

    return apply


BAD = {
    "unknown GPU type": (_set("pools.0.gpu", "B300"), "/pools/0/gpu"),
    "unknown GPU in gpuTypes": (_set("models.0.gpuTypes", ["RTX-9090"]), "/models/0/gpuTypes/0"),
    "model with no id": (_drop("models.0.id"), "missing property 'id'"),
    "model with no context length": (
        _drop("models.0.maxModelLen"),
        "missing property 'maxModelLen'",
    ),
    "model with empty id": (_set("models.0.id", ""), "/models/0/id"),
    "negative replicas": (_set("pools.0.replicas", -1), "/pools/0/replicas"),
    "negative pool minReplicas": (_set("pools.0.minReplicas", -2), "/pools/0/minReplicas"),
    "negative model minReplicas": (_set("models.0.minReplicas", -1), "/models/0/minReplicas"),
    "pool minReplicas > maxReplicas": (_set("pools.0.minReplicas", 3), "pools[0].minReplicas"),
    "model minReplicas > maxReplicas": (
        lambda v: v["models"][0].update(minReplicas=3, maxReplicas=2),
        "models[0].minReplicas",
    ),
    "pool replicas outside its range": (_set("pools.0.replicas", 5), "pools[0].replicas"),
    "pipeline parallelism below 1": (
        _set("models.0.pipelineParallelSize", 0),
        "/models/0/pipelineParallelSize",
    ),
    "unknown quantization": (_set("models.0.quantization", "int4"), "/models/0/quantization"),
    "unknown kv cache dtype": (_set("models.0.kvCacheDtype", "int8"), "/models/0/kvCacheDtype"),
    "latest image tag": (_set("image.gpu.tag", "latest"), "/image/gpu/tag"),
    "inline API keys": (_set("apiKeys.keys", ["sk-123"]), "'keys' not allowed"),
    "misspelt model field": (_set("models.0.tensorParalelSize", 2), "'tensorParalelSize'"),
    "tensor parallel wider than any node": (
        _set("models.0.tensorParallelSize", 2),
        "models[0].tensorParallelSize",
    ),
    "model on a GPU no pool has": (_set("models.0.gpuTypes", ["H100"]), "models[0].gpuTypes[0]"),
    "two pools of the model's GPU and no pool named": (
        lambda v: v["pools"].append({**v["pools"][0], "name": "l4b"}),
        "models[0].pool: 2 pools have GPU L4 (l4, l4b)",
    ),
    "model pinned to a pool of another GPU": (_set("models.0.pool", "h100"), "models[0].pool"),
    "duplicate pool name": (lambda v: v["pools"].append(dict(v["pools"][0])), "pools[1].name"),
    "duplicate model id": (lambda v: v["models"].append(dict(v["models"][0])), "models[1].id"),
    "bad pool name": (_set("pools.0.name", "L4_Pool"), "/pools/0/name"),
    "redis FT without address": (
        _set("gcsFaultTolerance.enabled", True),
        "gcsFaultTolerance.redisAddress",
    ),
    "rayjob GRPO without pools": (
        lambda v: v.update(grpo={"enabled": True, "mode": "rayjob"}),
        "grpo.rayJobCluster.pools",
    ),
}


def test_base_values_render() -> None:
    assert render_manifests(BASE)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_values_fail_naming_the_field(name: str) -> None:
    mutate, field = BAD[name]
    values = copy.deepcopy(BASE)
    mutate(values)
    with pytest.raises(HelmError) as err:
        render_manifests(values)
    assert field in str(err.value)


def test_pipeline_stages_beyond_the_pool_fail_in_the_template(tmp_path: Path) -> None:
    """PP stages spread over nodes of the pool: more stages than its maxReplicas x gpusPerNode
    can hold fail naming the field, without the schema too (--skip-schema-validation)."""
    chart = tmp_path / "r1-platform"
    shutil.copytree(CHART_DIR, chart)
    (chart / "values.schema.json").unlink()
    values = copy.deepcopy(BASE)
    values["models"][0]["pipelineParallelSize"] = 2
    assert render_manifests(values, chart_dir=chart)  # two stages on the pool's two L4 nodes
    values["models"][0]["pipelineParallelSize"] = 3
    with pytest.raises(HelmError, match=r"models\[0\]\.pipelineParallelSize: a TP1xPP3 replica"):
        render_manifests(values, chart_dir=chart)


def test_too_long_release_name_fails() -> None:
    with pytest.raises(HelmError, match="at most 47 characters"):
        render_manifests(BASE, release="r" * 48)


def test_misspelt_engine_argument_is_refused_by_the_settings_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The schema lets `engine` through as a map; the platform's settings model (the one the
    pods load) names the misspelt vLLM argument, so the chart test catches it before install."""
    for var in [v for v in os.environ if v.startswith("R1P_")]:
        monkeypatch.delenv(var)
    values = copy.deepcopy(BASE)
    values["models"][0]["engine"] = {"enable_prefix_cachin": True}
    doc = settings_document(render_objects(values))
    with pytest.raises(ValidationError, match="enable_prefix_cachin"):
        Settings(**doc)
    values["models"][0]["engine"] = {"enable_prefix_caching": True}
    assert Settings(**settings_document(render_objects(values))).models["m"].engine_extra == {
        "enable_prefix_caching": True
    }
