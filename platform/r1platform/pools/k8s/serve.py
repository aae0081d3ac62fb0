"""Kubernetes-side actuators for `r1p control --kubernetes`: KubeRay stays the source of truth.

- Serve replica counts go into the RayService's `spec.serveConfigV2` (a YAML string), which
  KubeRay applies to the running cluster in place. A count written only through Serve's REST API
  would be lost the next time KubeRay rebuilds the cluster from the spec.
- Every patch carries `metadata.resourceVersion`: the API server refuses it with 409 Conflict
  when anyone wrote the object since it was read. A conflict is retried on fresh state
  (re-read, re-apply the one change, re-patch), a bounded number of times; nothing is ever
  overwritten blind.
- Node counts are not touched here: they move only through Ray's autoscaler
  (`RayAutoscalerCapacity`, request_resources). The autoscaler owns the worker groups'
  `replicas`, and KubeRay ignores replica edits in a RayService spec anyway.
- Replica ownership: `serveConfigV2` is one string that Helm also owns, so a `helm upgrade`
  resets the counts to the chart's. The actuator remembers the counts it set (in memory and in
  the RayService annotation `REPLICAS_ANNOTATION`, which survives a controller restart and which
  Helm's three-way merge leaves alone) and restores them on the next cycle's read, recording a
  `restore` decision and a `pools.restore` span.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import yaml
from opentelemetry import trace

from r1platform.contracts import deployment_name as dn
from r1platform.telemetry import get_tracer, set_attributes

from ..serve_config import carry_running
from .rbac import GROUP, RAYSERVICES, VERSION
from .serve_config import (
    REPLICAS_ANNOTATION,
    RayServiceConfigError,
    RayServiceConflictError,
    deployment_entries,
    entry_replicas,
    owned_counts,
    parse_serve_config,
    set_entry_replicas,
)

TRACER = "r1platform.pools"  # the controller's tracer: restores sit beside its scale spans
Change = tuple[str, int | None, int]  # (Serve deployment name, count before, count after)


# ---------------------------------------------------------------- the Serve actuator
class RayServiceServeActuator:
    """ServeActuator over a KubeRay RayService: `D@P` replica counts in spec.serveConfigV2.

    `pools` (optional) gives the fleet's (pool, GPU type) pairs so a deployment named after its
    GPU type (`model@H100`, a model configured with only accelerator_type) is managed as the one
    pool of that type, as `contracts.deployment_name.resolve_pool` defines.
    """

    def __init__(
        self,
        api: Any,  # kubernetes.client.CustomObjectsApi
        namespace: str,
        name: str,
        *,
        max_attempts: int = 5,
        backoff_s: float = 0.2,
        pools: Callable[[], Iterable[tuple[str, str]]] | None = None,
        record_path: str | None = None,
        record: bool = True,
        cycle: Callable[[], int] = lambda: 0,
        restore: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.api, self.namespace, self.name = api, namespace, name
        self.max_attempts, self.backoff_s, self.sleep = max_attempts, backoff_s, sleep
        self.pools = pools
        self.record_path, self.record, self.cycle = record_path, record, cycle
        self.restore = restore  # False in a dry run: report what would be restored, write nothing
        self.owned: dict[str, int] = {}  # Serve name -> count this controller last set
        self.restores: list[Change] = []  # last read's (name, was, now)
        self.tracer = get_tracer(TRACER)

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _get(self) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, RAYSERVICES, self.name
        )

    def _key(self, name: str) -> tuple[str, str] | None:
        model, target = dn.parse(name)
        if target is None:
            return None
        pairs = list(self.pools()) if self.pools else []
        pool = dn.resolve_pool(target, pairs) if pairs else target
        return (model, pool) if pool else None

    def _update(
        self, mutate: Callable[[dict[str, Any], dict[str, int]], list[Change]]
    ) -> tuple[list[Change], dict[str, Any]]:
        """Read, apply `mutate` (which edits the document and the owned counts and returns the
        changes), patch with the read's resourceVersion; on 409 start over from a fresh read.
        Returns the changes and the object as stored afterwards."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(1, self.max_attempts + 1):
            obj = self._get()
            doc = parse_serve_config(obj, self.where)
            owned = {**owned_counts(obj), **self.owned}
            changes = mutate(doc, owned)
            if not changes:
                return [], obj
            entries = deployment_entries(doc)  # forget counts of deployments the chart dropped
            owned = {n: c for n, c in owned.items() if n in entries}
            body = {
                "metadata": {
                    "resourceVersion": obj["metadata"]["resourceVersion"],
                    "annotations": {REPLICAS_ANNOTATION: json.dumps(owned, sort_keys=True)},
                },
                "spec": {"serveConfigV2": yaml.safe_dump(doc, sort_keys=False)},
            }
            try:
                stored = self.api.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, RAYSERVICES, self.name, body
                )
            except ApiException as e:
                if e.status != 409:
                    raise
                if attempt < self.max_attempts:  # jittered, so two writers do not lock-step
                    self.sleep(self.backoff_s * attempt * (0.5 + random.random()))
                continue
            self.owned = owned
            return changes, stored
        raise RayServiceConflictError(
            f"RayService {self.where} changed under each of {self.max_attempts} attempts "
            "(409 Conflict); the change was not applied and nothing was overwritten"
        )

    def current_replicas(self) -> dict[tuple[str, str], int]:
        """Fixed counts of every `D@P` in serveConfigV2, after restoring the counts this
        controller owns where someone else (a `helm upgrade`) reset them."""
        obj = self._get()
        entries = deployment_entries(parse_serve_config(obj, self.where))
        owned = {**owned_counts(obj), **self.owned}
        self.owned = {n: c for n, c in self.owned.items() if n in entries}
        self.restores = []
        drift = sorted(
            n for n, c in owned.items() if n in entries and entry_replicas(entries[n]) != c
        )
        if drift and not self.restore:
            set_attributes(trace.get_current_span(), {"serve.replicas_drift": ",".join(drift)})
        elif drift:
            try:
                self.restores, obj = self._restore()
            except RayServiceConflictError as e:
                # Plan from what is there; the next cycle (or this cycle's scale) tries again.
                set_attributes(trace.get_current_span(), {"serve.restore_error": str(e)})
            entries = deployment_entries(parse_serve_config(obj, self.where))
        out = {}
        for name, entry in entries.items():
            key, n = self._key(name), entry_replicas(entry)
            if key is not None and n is not None:
                out[key] = n
        return out

    def _restore(self) -> tuple[list[Change], dict[str, Any]]:
        def mutate(doc, owned):
            entries = deployment_entries(doc)
            for gone in [n for n in owned if n not in entries]:
                del owned[gone]  # the chart dropped that deployment: not ours to re-add
            changes = []
            for n, want in sorted(owned.items()):
                was = entry_replicas(entries[n])
                if was != want:
                    set_entry_replicas(entries[n], want)
                    changes.append((n, was, want))
            return changes

        changes, obj = self._update(mutate)
        self._record_restores(changes)
        return changes, obj

    def _record_restores(self, changes: list[Change]) -> None:
        if not changes:
            return
        from r1platform.pools import decisions as rec

        summary = ",".join(f"{n}:{'-' if w is None else w}->{c}" for n, w, c in changes)
        set_attributes(trace.get_current_span(), {"serve.replicas_restored": summary})
        reason = f"serveConfigV2 of RayService {self.where} changed outside the controller "
        reason += "(helm upgrade?); restored the controller's count"
        out = []
        for n, was, now in changes:
            model, pool = self._key(n) or (n, None)
            with self.tracer.start_as_current_span("pools.restore") as s:
                attrs = {"deployment": model, "pool": pool, "before": was, "after": now}
                set_attributes(s, {**attrs, "rayservice": self.where, "reason": reason})
                ctx = s.get_span_context()
            out.append(
                rec.Decision(
                    ts=time.time(),
                    cycle=self.cycle(),
                    kind="restore",
                    target=model,
                    pool=pool,
                    gpu=None,
                    before=-1 if was is None else was,
                    after=now,
                    reason=reason,
                    trace_id=f"{ctx.trace_id:032x}" if ctx.trace_id else None,
                )
            )
        if self.record:
            rec.append(out, self.record_path)

    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas} for {deployment}@{pool}")

        def mutate(doc, owned):
            matches = [n for n in deployment_entries(doc) if self._key(n) == (deployment, pool)]
            if not matches:
                raise RayServiceConfigError(
                    f"deployment {dn.build(deployment, pool)!r} is not listed in the "
                    f"serveConfigV2 of RayService {self.where} (every model@pool deployment "
                    "must be listed there to be scaled)"
                )
            name = matches[0]
            entry = deployment_entries(doc)[name]
            was = entry_replicas(entry)
            if (
                was == replicas
                and "autoscaling_config" not in entry
                and owned.get(name) == replicas
            ):
                return []  # already so, and already recorded as ours
            owned[name] = int(replicas)
            set_entry_replicas(entry, replicas)
            return [(name, was, int(replicas))]

        self._update(mutate)

    def deploy(self, config: dict[str, Any]) -> None:
        """Put a Serve config from `serve_config.serve_config(plan)` into serveConfigV2: its
        applications replace those of the same name (KubeRay applies the change in place), and
        the replica counts it sets become the controller's own, so a `helm upgrade` that resets
        them is restored like any other count."""

        def mutate(doc, owned):
            names = {a["name"] for a in config["applications"]}
            kept = [a for a in doc["applications"] if (a or {}).get("name") not in names]
            new = carry_running(list(config["applications"]), doc["applications"])
            if kept + new == doc["applications"]:
                return []
            doc["applications"] = kept + new
            changes = []
            for name, entry in deployment_entries({"applications": config["applications"]}).items():
                n = entry_replicas(entry)
                if n is not None:
                    owned[name] = n
                    changes.append((name, None, n))
            return changes or [("", None, 0)]

        self._update(mutate)
