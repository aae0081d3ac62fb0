"""The OpenAI HTTP contract (request models, error shape) and the engine → ingress stream items.

Request fields fall in three groups, and nothing is dropped silently:
- honoured: declared on the models below, type- and range-checked, passed to vLLM;
- accepted and ignored: `IGNORED_FIELDS`, which SDKs and frameworks send routinely and which
  mean nothing for generation here;
- anything else: a 400 that names the field (a null value counts as not sent).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Sent by SDKs and frameworks without carrying any generation meaning on this server.
IGNORED_FIELDS = (
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
)
MAX_TOP_LOGPROBS = 20  # vLLM's default max_logprobs, and OpenAI's limit for top_logprobs
# Integers reach torch and the engine's int64 tensors: anything outside int64 would fail there,
# inside the engine, instead of as a 400 here.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_SCHEMA_DEPTH = 64
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]


# ---- errors -----------------------------------------------------------------------------------
class ErrorBody(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


# A request body larger than this is refused (413) before it is parsed: the largest legitimate
# body (a context's worth of messages) is far smaller, and parsing is CPU and memory we'd spend
# on a client's mistake.
MAX_BODY_BYTES = 8 * 1024 * 1024


class ClientError(Exception):
    """A request problem that is the client's to fix; maps to a 4xx with the OpenAI shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.type, self.code = (
            message,
            status,
            param,
            type_,
            code,
        )
        self.headers = headers or {}

    @classmethod
    def from_item(cls, item: ErrorItem) -> ClientError:
        e = item["error"]
        return cls(
            e["message"], status=item["status"], param=e["param"], type_=e["type"], code=e["code"]
        )

    def error(self) -> ErrorBody:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def body(self) -> dict[str, Any]:
        return {"error": self.error()}

    def item(self) -> ErrorItem:
        return {"error": self.error(), "status": self.status}


def replica_unavailable() -> ClientError:
    """What a client gets when the replica serving its request died before finishing it: the
    ingress says it for an engine replica, the proxy guard for an ingress replica."""
    return ClientError(
        "The model replica serving this request failed; the request was not completed. Retry it.",
        status=503,
        type_="server_error",
        code="replica_unavailable",
    )


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# ---- engine → ingress stream items ---------------------------------------------------------
# Plain dicts at run time (they cross Ray and are serialised as they are); the TypedDicts only
# name their keys. The ingress tells them apart by key: "error", "meta", "tail", else a chunk.
class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: dict[str, int]


class Meta(TypedDict):
    id: str
    prompt_tokens: int


class MetaItem(TypedDict):
    """The request was accepted and its first token exists; sent before any chunk."""

    meta: Meta


class ErrorItem(TypedDict):
    """The request was refused before generation; `status` is the HTTP status to answer."""

    error: ErrorBody
    status: int


class ChunkItem(TypedDict):
    """An OpenAI object sent to the client as is: a stream chunk, or the whole response."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: NotRequired[Usage]


class Tail(TypedDict):
    usage: Usage
    finish_reasons: list[str]


class TailItem(TypedDict):
    """Always last: what the ingress records (metrics, span) once the request is done."""

    tail: Tail


StreamItem = MetaItem | ErrorItem | ChunkItem | TailItem


# ---- requests --------------------------------------------------------------------------------
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool | None = None  # ignored: no padding is added to chunks


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None  # the grammar always enforces the schema

    @field_validator("schema_")
    @classmethod
    def _shallow(cls, v: dict[str, Any]) -> dict[str, Any]:
        # The grammar compiler walks the schema recursively; a pathological depth would fail
        # (or stall) inside the engine instead of here.
        level, depth = [v], 0
        while level:
            depth += 1
            if depth > MAX_SCHEMA_DEPTH:
                raise ValueError(f"the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels")
            level = [
                c
                for node in level
                for c in (node.values() if isinstance(node, dict) else node)
                if isinstance(c, dict | list)
            ]
        return v


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class _SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stop_token_ids: list[TokenId] | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None  # only include_usage means anything
    # IGNORED_FIELDS, declared so they are typed and documented in the OpenAPI schema.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limit(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key in v or ():
            # Only ASCII digits: str.isdigit() also accepts '²', which int() refuses.
            if not (key.isascii() and key.isdigit() and len(key) <= 10):
                raise ValueError(f"keys must be token ids (non-negative integers), got {key!r}")
        return v

    def sampling(self, max_tokens: int | None) -> dict[str, Any]:
        """Only what the client set, so engine defaults (generation_config) apply otherwise."""
        out: dict[str, Any] = {"n": self.n, "max_tokens": max_tokens}
        for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.stop:
            out["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.stop_token_ids:
            out["stop_token_ids"] = list(self.stop_token_ids)
        if self.logit_bias:
            out["logit_bias"] = {int(k): b for k, b in self.logit_bias.items()}
        if self.num_logprobs is not None:
            out["logprobs"] = self.num_logprobs
        return out

    @property
    def num_logprobs(self) -> int | None:
        """Top alternatives per token for vLLM; None when no logprobs were asked for."""
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, v: int | None, info: Any) -> int | None:
        if v is not None and not info.data.get("logprobs"):
            raise ValueError("logprobs must be true when top_logprobs is set")
        return v

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def structured_output(self) -> dict[str, Any] | None:
        """vLLM StructuredOutputsParams fields for response_format, or None for free text."""
        fmt = self.response_format
        if isinstance(fmt, JsonObjectFormat):
            return {"json_object": True}
        if isinstance(fmt, JsonSchemaFormat):
            return {"json": fmt.json_schema.schema_}
        return None


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] | list[int]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("prompt")
    @classmethod
    def _nonempty(cls, v: str | list[str] | list[int]) -> str | list[str] | list[int]:
        if not v or (isinstance(v, list) and any(s == "" for s in v)):
            raise ValueError("prompt must not be empty")
        return v

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

    def structured_output(self) -> dict[str, Any] | None:
        return None


REQUEST_MODELS: tuple[type[_SamplingRequest], ...] = (ChatRequest, CompletionRequest)
_KNOWN = {cls: frozenset(cls.model_fields) for cls in REQUEST_MODELS}


def parse_request(model_cls: type[_SamplingRequest], payload: Any, max_n: int | None = None) -> Any:
    """Validate an OpenAI request body (`max_n`: the ingress's limit on n, if any). Null-valued
    unknown fields are removed from `payload` in place (they mean "not set"), so the engine
    validates exactly what the ingress checked."""
    if not isinstance(payload, dict):
        raise ClientError("request body must be a JSON object")
    for name in sorted(payload.keys() - _KNOWN[model_cls]):
        if payload[name] is not None:
            raise ClientError(
                f"{name}: this parameter is not supported by this server",
                param=name,
                code="unsupported_parameter",
            )
        del payload[name]
    try:
        req = model_cls.model_validate(payload)
    except RecursionError:
        raise ClientError("request body is nested too deeply") from None
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ClientError(f"{param}: {first['msg']}", param=param) from None
    if max_n is not None and req.n > max_n:
        raise ClientError(f"n: must be between 1 and {max_n}", param="n")
    return req
