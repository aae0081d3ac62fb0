"""An in-process Kubernetes API server for unit tests, under the real `kubernetes` client.

`FakeKube.client()` returns a real `kubernetes.client.ApiClient` whose urllib3 pool manager is
this fake, so every call goes through the client's own request building, JSON serialization,
content types, deserialization into its models, and status -> exception mapping (a 409 reaches
the caller as the client's own `ApiException` subclass with status 409).

Semantics kept from the real API server:
- every stored object has a `metadata.resourceVersion`, taken from one cluster-wide counter that
  every write bumps (etcd's revision);
- a PATCH/PUT whose body carries a `metadata.resourceVersion` that is not the stored one fails
  with 409 Conflict and the API server's own Status body; without one it applies;
- custom resources accept JSON merge patch (RFC 7386) and refuse strategic merge patch (415);
- list/get/patch/... are what the authorizer sees: each request is recorded as
  (user, apiGroup, resource, verb) with the verb resolved like the API server's RequestInfo
  (GET on a name = get, on a collection = list, with watch=true = watch), and a user given
  rules gets 403 Forbidden for anything they do not allow.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client

KINDS = {  # kind -> (apiGroup, version, plural, namespaced)
    "Node": ("", "v1", "nodes", False),
    "RayService": ("ray.io", "v1", "rayservices", True),
    "RayCluster": ("ray.io", "v1", "rayclusters", True),
}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


@dataclass(frozen=True)
class Request:
    user: str
    method: str
    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None
    query: dict[str, str]
    body: Any


class _Response:
    """What `kubernetes.client.rest.RESTResponse` reads from a urllib3 response."""

    def __init__(self, status: int, reason: str, payload: Any) -> None:
        self.status, self.reason = status, reason
        self.data = json.dumps(payload).encode()
        self.headers = urllib3.HTTPHeaderDict({"content-type": "application/json"})

    def getheaders(self):
        return self.headers


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def matches_selector(labels: dict[str, str], selector: str | None) -> bool:
    """Equality- and existence-based label selectors (`k`, `!k`, `k=v`, `k==v`, `k!=v`)."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.revision = 100
        self.requests: list[Request] = []
        self.rules: dict[str, set[tuple[str, str, str]]] = {}  # user -> allowed triples
        # Called with each request before it is served (a test's concurrent writer goes here).
        self.hooks: list[Callable[[Request], None]] = []
        self._serializer = client.ApiClient()

    # ------------------------------------------------------------ test-side API
    def client(self, user: str = "controller") -> client.ApiClient:
        cfg = client.Configuration(host="https://fake-apiserver.invalid")
        api = client.ApiClient(cfg)
        api.rest_client.pool_manager = _PoolManager(self, user)
        return api

    def allow(self, user: str, triples: Iterable[tuple[str, str, str]]) -> None:
        """Enforce RBAC for `user`: only these (apiGroup, resource, verb) pass, others get 403."""
        self.rules[user] = set(triples)

    def calls(self, user: str = "controller") -> set[tuple[str, str, str]]:
        return {(r.group, r.resource, r.verb) for r in self.requests if r.user == user}

    def add(self, obj: Any) -> dict[str, Any]:
        """Store an object (a kubernetes model such as V1Node, or a plain dict for a CR)."""
        raw = obj if isinstance(obj, dict) else self._serializer.sanitize_for_serialization(obj)
        raw = copy.deepcopy(raw)
        kind = raw.get("kind") or type(obj).__name__.removeprefix("V1")
        group, version, plural, namespaced = KINDS[kind]
        raw.setdefault("apiVersion", f"{group}/{version}" if group else version)
        raw["kind"] = kind
        meta = raw.setdefault("metadata", {})
        ns = meta.setdefault("namespace", "default") if namespaced else ""
        meta["generation"] = 1
        self._bump(meta)
        self.objects[(group, plural, ns, meta["name"])] = raw
        return copy.deepcopy(raw)

    def get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(group, plural, namespace or "", name)])

    def write(self, group: str, plural: str, namespace: str, name: str, patch: dict) -> None:
        """A write by someone else (helm, kubectl, another controller): merge patch, no
        precondition, new resourceVersion."""
        key = (group, plural, namespace or "", name)
        self.objects[key] = self._apply(self.objects[key], patch)

    # ------------------------------------------------------------ server side
    def _bump(self, meta: dict[str, Any]) -> None:
        self.revision += 1
        meta["resourceVersion"] = str(self.revision)

    def _apply(self, current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        new = merge_patch(current, patch)
        new["metadata"]["name"] = current["metadata"]["name"]  # immutable
        if new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self._bump(new["metadata"])
        return new

    def handle(self, user: str, method: str, url: str, headers: dict, body: str | None):
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        m = _PATH.match(parts.path)
        if not m:
            return _status(404, "NotFound", f"the server could not find {parts.path}")
        group = "" if m["core"] else m["group"]
        resource = m["resource"] + (f"/{m['sub']}" if m["sub"] else "")
        ns, name = m["ns"], m["name"]
        verb = {
            "GET": (
                "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
            ),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }[method]
        req = Request(user, method, verb, group, resource, ns, name, query, _load(body))
        self.requests.append(req)
        if user in self.rules and (group, resource, verb) not in self.rules[user]:
            what = f"{resource}.{group}" if group else resource
            return _status(
                403, "Forbidden", f'{what} is forbidden: User "{user}" cannot {verb} resource'
            )
        for hook in list(self.hooks):
            hook(req)
        what = f"{resource}.{group}" if group else resource
        if verb == "list":
            items = [
                copy.deepcopy(o)
                for (g, r, n, _), o in sorted(self.objects.items())
                if g == group
                and r == resource
                and (ns is None or n == ns)
                and matches_selector(o["metadata"].get("labels") or {}, query.get("labelSelector"))
            ]
            kind = next((k for k, v in KINDS.items() if v[0] == group and v[2] == resource), "")
            return (
                200,
                "OK",
                {
                    "apiVersion": "v1" if not group else f"{group}/{m['version']}",
                    "kind": f"{kind}List",
                    "metadata": {"resourceVersion": str(self.revision)},
                    "items": items,
                },
            )
        key = (group, resource, ns or "", name)
        if key not in self.objects:
            return _status(404, "NotFound", f'{what} "{name}" not found', name, group, resource)
        current = self.objects[key]
        if verb == "get":
            return 200, "OK", copy.deepcopy(current)
        if verb == "patch":
            ctype = (headers.get("Content-Type") or "").split(";")[0]
            if ctype != "application/merge-patch+json" and not (
                ctype == "application/strategic-merge-patch+json" and not group
            ):
                return _status(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an "
                    f"unknown format - accepted media types include: "
                    f"application/merge-patch+json ({ctype} given)",
                )
            patch = req.body or {}
            want_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and want_rv != current["metadata"]["resourceVersion"]:
                return _status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {what} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    name,
                    group,
                    resource,
                )
            patch = merge_patch(patch, {"metadata": {"resourceVersion": None}})
            self.objects[key] = self._apply(current, patch)
            return 200, "OK", copy.deepcopy(self.objects[key])
        return _status(405, "MethodNotAllowed", f"{verb} is not served by this fake")


def _load(body: Any) -> Any:
    if body is None or isinstance(body, (dict, list)):
        return body
    return json.loads(body)


def _status(code, reason, message, name=None, group=None, kind=None):
    details = {"name": name, "group": group, "kind": kind} if name else {}
    return (
        code,
        reason,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {k: v for k, v in details.items() if v is not None},
            "code": code,
        },
    )


class _PoolManager:
    """Stands in for urllib3.PoolManager inside the client's RESTClientObject."""

    def __init__(self, server: FakeKube, user: str) -> None:
        self.server, self.user = server, user

    def request(self, method, url, body=None, headers=None, **_kw) -> _Response:
        status, reason, payload = self.server.handle(self.user, method, url, headers or {}, body)
        return _Response(status, reason, payload)

    def clear(self) -> None:
        pass


def serve_http(server: FakeKube, user: str = "controller"):
    """Serve the fake over plain HTTP on 127.0.0.1 (for a controller in another process, which
    reaches it through a kubeconfig); returns (url, http_server). Stop with .shutdown()."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n).decode() if n else None
            with lock:
                status, reason, payload = server.handle(
                    user, self.command, self.path, dict(self.headers), body
                )
            data = json.dumps(payload).encode()
            self.send_response(status, reason)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


def kubeconfig(url: str, namespace: str = "default") -> dict:
    """A kubeconfig document that points the kubernetes client at `url`."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "controller", "user": {"token": "fake-token"}}],
        "contexts": [
            {
                "name": "fake",
                "context": {"cluster": "fake", "user": "controller", "namespace": namespace},
            }
        ],
        "current-context": "fake",
    }
