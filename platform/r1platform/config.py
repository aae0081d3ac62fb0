"""The typed settings tree (pydantic-settings): env prefix R1P_, nested delimiter __,
and an optional YAML file named by R1P_CONFIG. Environment beats YAML beats defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from r1platform.serving.tuning import Ingress


class StrictModel(BaseModel):
    """Every level refuses unknown keys: a typo such as `models.<id>.max_model_length` must
    fail loudly, not be dropped while the default silently applies."""

    model_config = ConfigDict(extra="forbid")


class AutoscalingSettings(StrictModel):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


class ModelSettings(StrictModel):
    """One served model: where its weights are, how its engine runs, where it is placed."""

    path: str | None = Field(
        None,
        description="HF id of the R1 family (any case, or its short name) or a local HF model "
        "dir; None = the tiny model",
    )
    max_model_len: int = Field(256, ge=16)
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1, description="PP stages, one node each")
    # None: the engine profile of the pool's GPU and the model (pools.engine_profiles) on GPUs,
    # float32 / no quantization on CPU. A value set here is checked against the GPU, never
    # replaced.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    quantization: Literal["fp8", "none"] | None = None
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] | None = None
    accelerator_type: str | None = Field(None, description="GPU pool type, e.g. H100 or L4")
    pool: str | None = Field(None, description="pin to a named pool of the pools file")
    gpu_memory_utilization: float = Field(0.2, gt=0, le=1)
    num_cpus: float = Field(1.0, ge=0)
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="vLLM CPU KV cache (CPU only)")
    max_num_seqs: int = Field(64, ge=1)
    enforce_eager: bool = True
    seed: int = 0
    reasoning_parser: str | None = "deepseek_r1"
    stream_interval: int | Literal["auto"] = Field(
        "auto", description="tokens per streamed chunk; auto grows with engine load"
    )
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    engine_extra: dict[str, Any] = Field(
        default_factory=dict,
        description="any other vLLM AsyncEngineArgs argument, by its vLLM name",
    )

    @field_validator("path")
    @classmethod
    def _model_path(cls, v: str | None) -> str | None:
        return None if v is None else canonical_model_path(v)

    @model_validator(mode="after")
    def _profile_runs(self) -> ModelSettings:
        """A real model pinned to a GPU type must have an engine profile that GPU can run.
        A local dir not on this machine (a chart's mounted volume) is checked by the engine."""
        from r1platform.pools.fit import hf_id

        readable = self.path is not None and (
            hf_id(self.path) or (Path(self.path).expanduser() / "config.json").is_file()
        )
        if readable and self.accelerator_type:
            self.engine_profile(self.accelerator_type)
        return self

    def engine_profile(self, gpu_type: str):
        """The pools.engine_profiles.EngineProfile of this model on `gpu_type` (catalog name or
        alias), from the explicit fields and the GPU's defaults; ValueError when it cannot run."""
        from r1platform.pools.catalog import load_catalog
        from r1platform.pools.engine_profiles import resolve_profile
        from r1platform.pools.fit import model_spec

        catalog = load_catalog()
        if gpu_type not in catalog:
            raise ValueError(f"accelerator_type {gpu_type!r} is not a catalog GPU")
        spec = model_spec(self.path or "tiny-r1")
        return resolve_profile(
            self.path or "tiny-r1",
            spec.quantization,
            catalog[gpu_type],
            dtype=self.dtype,
            quantization=self.quantization,
            kv_cache_dtype=self.kv_cache_dtype,
        )

    @field_validator("engine_extra")
    @classmethod
    def _known_engine_args(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            return v
        from r1platform.vllm_args import engine_extra_problem

        for key in v:
            problem = engine_extra_problem(key)
            if problem:
                raise ValueError(problem)
        return v


def canonical_model_path(v: str) -> str:
    """A built-in name or HF id of the R1 family (any case) -> its HF repo id; a path -> as
    given (the engine checks its config.json when it starts). An `org/name` that is neither a
    local directory nor a known id is refused with the close matches."""
    from r1platform.pools.fit import builtin_key, hf_id, unknown_model_error

    known = hf_id(v)
    if known:
        return known
    if builtin_key(v) == "tiny-r1":
        raise ValueError("the tiny model is `path: null` (its directory is built on first use)")
    p = Path(v).expanduser()
    looks_like_id = not v.startswith(("/", ".", "~")) and v.count("/") == 1
    if looks_like_id and not p.is_dir():
        raise ValueError(
            f"{unknown_model_error(v)}; for another model, download it and give its local dir"
        )
    return v


class ServeSettings(StrictModel):
    # In a Kubernetes pod Serve must listen on 0.0.0.0; locally loopback keeps it private.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_keys: list[str] = Field(default_factory=list)
    max_concurrent_per_key: int = Field(64, ge=1)
    max_n: int = Field(16, ge=1)
    request_timeout_s: float = Field(300.0, gt=0)
    placement: Literal["auto", "gpu", "simulated"] = "auto"
    # How HTTP reaches the ingress replicas (serving/tuning.py says what each costs and keeps).
    ingress: Ingress = "proxy"


def _default_models() -> dict[str, ModelSettings]:
    return {"tiny-r1": ModelSettings()}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="R1P_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    models: dict[str, ModelSettings] = Field(default_factory=_default_models)
    serve: ServeSettings = ServeSettings()
    # R1P_API_KEYS is the documented switch for auth; it is a top-level alias of serve.api_keys.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @model_validator(mode="after")
    def _merge_keys(self) -> Settings:
        if self.api_keys:
            self.serve.api_keys = sorted(set(self.serve.api_keys) | set(self.api_keys))
        if not self.models:
            raise ValueError("models: at least one model must be configured")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return layered_sources(
            settings_cls, init_settings, env_settings, os.environ.get("R1P_CONFIG")
        )


def layered_sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
    yaml_file: str | Path | None,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The one precedence every settings tree here uses: explicit values, then the environment,
    then the YAML file, then defaults (no .env or secrets dirs)."""
    sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
    if yaml_file:
        sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
    return tuple(sources)


class ConfigError(ValueError):
    """A settings problem, already phrased as the one line a user should see."""


def describe_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "settings"
    # Our own validators' messages already say what is wrong; pydantic's prefix is noise.
    msg = first["msg"].removeprefix("Value error, ")
    return f"invalid setting {field}: {msg}"


def check_yaml_document(path: str | Path, what: str) -> Any:
    """The parsed YAML mapping at `path`, or a ConfigError naming the file, the line and the
    problem (pydantic-settings would let a raw parser traceback through)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what} {path}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} {path}: cannot read ({type(err).__name__}: {err})") from None
    if doc is not None and not isinstance(doc, dict):
        raise ConfigError(
            f"{what} {path}: the document must be a mapping of settings, got {type(doc).__name__}"
        )
    return doc


def load_settings(**overrides: Any) -> Settings:
    path = os.environ.get("R1P_CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(f"R1P_CONFIG: file not found: {path}")
    if path:
        check_yaml_document(path, "R1P_CONFIG")
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err)) from None
