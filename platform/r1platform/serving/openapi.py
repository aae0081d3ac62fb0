"""The request bodies in the ingress's OpenAPI document.

The routes read the raw request and validate it themselves (our error shape, one parse), so
FastAPI cannot infer their bodies. Each route declares its pydantic model's schema instead,
and the models' JSON schemas are added under `components.schemas`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

_REF = "#/components/schemas/{model}"


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model`."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}
            },
        }
    }


def install(app: FastAPI, models: tuple[type[BaseModel], ...]) -> None:
    """Make `app.openapi()` also publish `models` (and the models they use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = FastAPI.openapi(app)  # builds and caches app.openapi_schema
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template=_REF)
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
