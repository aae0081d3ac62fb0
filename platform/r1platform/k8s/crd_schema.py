"""Validate custom resources against a CRD's openAPIV3Schema with jsonschema.

A CRD schema is OpenAPI v3 with Kubernetes extensions; this maps it to JSON Schema the way the
API server reads it: `x-kubernetes-int-or-string` accepts an integer or a string,
`x-kubernetes-preserve-unknown-fields` keeps anything, `nullable` admits null, and every other
object with declared properties rejects unknown fields (what `kubectl apply` with strict field
validation reports, instead of the silent pruning that would drop a misspelt field).
CEL `x-kubernetes-validations` rules are not evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .render import REPO_ROOT

CRD_DIR = REPO_ROOT / "k8s" / "crds" / "kuberay-v1.7.0"


def to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, Mapping):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    out.pop("nullable", None)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
    elif "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """{(apiVersion, kind): JSON schema} for every served version of every CRD in the dir."""
    schemas = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        # 3 MB of YAML: the C loader makes this a second instead of ten.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        for crd in yaml.load_all(path.read_text(), Loader=loader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for ver in crd["spec"]["versions"]:
                schema = to_json_schema(ver["schema"]["openAPIV3Schema"])
                # The API server owns metadata's schema; the CRD only says "object".
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[(f"{group}/{ver['name']}", kind)] = schema
    return schemas


@cache
def _validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schemas()[(api_version, kind)])


def validate_custom_resource(obj: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError (with the failing path) or KeyError for unknown kinds."""
    error = jsonschema.exceptions.best_match(
        _validator(obj["apiVersion"], obj["kind"]).iter_errors(obj)
    )
    if error is not None:
        raise error
