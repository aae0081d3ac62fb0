"""The serveConfigV2 document of a RayService: parse it, find and edit `model@pool` entries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

REPLICAS_ANNOTATION = "r1-platform.io/serve-replicas"


class RayServiceConflictError(RuntimeError):
    """The RayService kept changing under every attempt; the change was not applied."""


class RayServiceConfigError(ValueError):
    """The RayService's serveConfigV2 is missing, unparsable, or lacks the deployment."""


# ---------------------------------------------------------------- serveConfigV2 document
def parse_serve_config(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    text = (obj.get("spec") or {}).get("serveConfigV2")
    if not text:
        raise RayServiceConfigError(f"RayService {where} has no spec.serveConfigV2")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RayServiceConfigError(
            f"RayService {where}: spec.serveConfigV2 is not YAML: {e}"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("applications"), list):
        raise RayServiceConfigError(f"RayService {where}: spec.serveConfigV2 has no applications")
    return doc


def deployment_entries(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Serve deployment name -> its (mutable) entry, over every application."""
    out: dict[str, dict[str, Any]] = {}
    for app in doc["applications"]:
        for entry in (app or {}).get("deployments") or []:
            if isinstance(entry, dict) and entry.get("name"):
                out[str(entry["name"])] = entry
    return out


def entry_replicas(entry: Mapping[str, Any]) -> int | None:
    """The fixed count of an entry; None when it autoscales or takes the count from code."""
    n = entry.get("num_replicas")
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def set_entry_replicas(entry: dict[str, Any], replicas: int) -> None:
    entry["num_replicas"] = int(replicas)
    entry.pop("autoscaling_config", None)  # the controller is the autoscaler; Serve refuses both


def owned_counts(obj: Mapping[str, Any]) -> dict[str, int]:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(REPLICAS_ANNOTATION)
    try:
        data = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}  # a hand-edited annotation must not stop the loop; memory still holds ours
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}
