"""The ``serve`` config: backends, policy, predictor, limits and the emulated cluster.

Example (``configs/serve-emulated.yaml``)::

    backends:
      - {url: "http://127.0.0.1:8001", engine: vllm, gpu: A100, model: llama-3.1-8b}
    policy: {name: least-outstanding}
    predictor: {name: none}
    priority: none

Every section is a :class:`~sagerl.schema.StrictModel`, so a typo is a one-line error naming the
key. Only the URLs listed under ``backends`` are ever connected to (the router has no other
upstream), and the router itself binds to loopback unless ``host`` says otherwise.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from sagerl.schema import StrictModel
from sagerl.workload.config import DatasetSpec

Engine = Literal["vllm", "sglang"]

NO_PREDICTOR = "none"
"""``predictor.name`` that runs the router without a length predictor."""


class BackendSpec(StrictModel):
    """One model server behind the router."""

    url: str = Field(description="Base URL of the server, e.g. http://127.0.0.1:8001 (no path).")
    engine: Engine = Field("vllm", description="vllm or sglang: selects the metric names scraped.")
    gpu: str = Field("A100", description="GPU kind (A40, A100, H100, H800, H200): speed hints.")
    model: str = Field(
        "llama-3.1-8b", description="Model architecture served (step-time model and KV size)."
    )
    tp: int = Field(1, ge=1, description="Tensor-parallel degree of the server.")
    name: str | None = Field(None, description="Label in logs and /metrics (default: host:port).")
    priority_scheduling: bool = Field(
        False,
        description="The server runs `--scheduling-policy priority` (vLLM): with "
        "`priority: gittins` the router sends each request's rank as its `priority` field.",
    )
    kv_blocks_total: int | None = Field(
        None,
        ge=1,
        description="KV-cache capacity in blocks. Default: scraped from vllm:cache_config_info "
        "when present, else sized by the step-time model as vLLM would.",
    )
    block_size: int = Field(16, ge=1, description="Tokens per KV block (vLLM's --block-size).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"backend url must be http(s)://host:port, got {url!r}")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"backend url must have no path or query, got {url!r}")
        return url.rstrip("/")

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, name: str) -> str:
        from sagerl.hardware import get_gpu

        return _checked(lambda: get_gpu(name), name)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from sagerl.hardware import get_model

        return _checked(lambda: get_model(name), name)

    @property
    def label(self) -> str:
        """Short name for logs and metric labels."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _checked(lookup: Any, name: str) -> str:
    from sagerl.errors import UnknownNameError

    try:
        lookup()
    except UnknownNameError as exc:
        raise ValueError(str(exc)) from None
    return name


class PolicySpec(StrictModel):
    """The placement decision: a registered placement policy, or an exported ONNX policy."""

    name: str = Field(
        "least-outstanding",
        description="Registered placement policy (round-robin, least-outstanding, least-kv, "
        "power-of-two, random, sagesched) or `onnx` for an exported policy.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the placement policy (its constructor)."
    )
    path: str | None = Field(
        None, description="`onnx` only: the exported policy file (a JSON sidecar beside it)."
    )
    seed: int = Field(0, description="Seed of randomised policies (random, power-of-two).")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name == "onnx":
            return name
        from sagerl.errors import UnknownNameError
        from sagerl.policy import PLACEMENT

        try:
            PLACEMENT.get(name)
        except UnknownNameError as exc:
            raise ValueError(f"{exc} (or onnx)") from None
        return name

    @model_validator(mode="after")
    def _check(self) -> PolicySpec:
        if self.name == "onnx" and not self.path:
            raise ValueError("policy 'onnx' needs policy.path (the exported .onnx file)")
        return self


class PredictorSpec(StrictModel):
    """The length predictor run on each request (off the event loop, batched)."""

    name: str = Field(
        NO_PREDICTOR,
        description="`none`, or a registered predictor: sagesched, length-history, global, "
        "point, tie (oracle has no true length to read live).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="PredictorConfig fields (similarity, history_size...)."
    )
    warmup: list[DatasetSpec] = Field(
        default_factory=list, description="Data sets forming the warm-up pool (start-up search)."
    )
    max_batch: int = Field(64, ge=1, description="Most requests predicted in one batch.")
    history_path: str | None = Field(
        None,
        description="Load the predictor's online history from this file at start and save it "
        "there at shutdown (history-based predictors).",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name == NO_PREDICTOR:
            return name
        if name == "oracle":
            raise ValueError("predictor 'oracle' reads the true output length: not available live")
        from sagerl.predict import predictor_names

        valid = predictor_names()
        if name not in valid:
            from sagerl.errors import unknown_name

            raise ValueError(str(unknown_name("predictor", name, [*valid, NO_PREDICTOR])))
        return name


class TokenizerSpec(StrictModel):
    """How prompt tokens are counted (tiktoken vocabularies from shared/data/tokenizers)."""

    name: str = Field("cl100k_base", description="Entry of the tokenizer manifest.")
    manifest: str | None = Field(
        None,
        description="Path of manifest.json (default: <data dir>/tokenizers/manifest.json).",
    )
    chat_overhead_tokens: int = Field(
        4, ge=0, description="Tokens added per chat message for the template's role markers."
    )


class ScrapeSpec(StrictModel):
    """Polling of each backend's Prometheus /metrics."""

    interval_s: float = Field(0.5, gt=0, description="Time between scrapes of one backend, s.")
    timeout_s: float = Field(1.0, gt=0, description="Time allowed for one scrape, s.")
    stale_after_s: float = Field(
        2.0, gt=0, description="A scrape older than this is stale: views use the ledger only, s."
    )
    unhealthy_after: int = Field(
        3, ge=1, description="Consecutive failed scrapes that mark a backend unhealthy."
    )


class LimitSpec(StrictModel):
    """Input limits; a request over any of them gets a 4xx with a message."""

    max_body_bytes: int = Field(4_000_000, ge=1024, description="Largest request body, bytes.")
    max_prompt_tokens: int = Field(
        131_072, ge=1, description="Largest prompt, tokens (413 beyond it)."
    )
    max_tokens: int = Field(
        32_768, ge=1, description="Largest accepted `max_tokens` (400 beyond it)."
    )
    max_retries: int = Field(
        2, ge=0, description="Other backends tried when one fails before the first byte."
    )
    upstream_timeout_s: float = Field(
        600.0, gt=0, description="Longest a backend may take to complete one request, s."
    )
    connect_timeout_s: float = Field(2.0, gt=0, description="Time to connect to a backend, s.")


class EmulateSpec(StrictModel):
    """Emulated backends started with the router (``serve --emulate N`` sets count)."""

    count: int = Field(0, ge=0, description="Emulated servers to start on loopback (0: none).")
    gpu: str = Field("A100", description="GPU kind of every emulated server.")
    model: str = Field("llama-3.1-8b", description="Model of every emulated server.")
    time_scale: float = Field(
        1.0, gt=0, description="Simulated seconds per real second (10: ten times faster)."
    )
    base_port: int = Field(
        0, ge=0, le=65535, description="First port (0: ephemeral ports chosen by the OS)."
    )
    priority_scheduling: bool = Field(
        False, description="Emulate `--scheduling-policy priority` (honour `priority`)."
    )
    mean_output_tokens: float = Field(
        128.0, gt=0, description="Mean output length when a request sets no max_tokens/ignore_eos."
    )
    stream_interval_ms: float = Field(
        5.0, gt=0, description="Real milliseconds between token flushes while decoding."
    )


class ServeConfig(StrictModel):
    """The live router: where it listens, what it routes to, and how it decides."""

    host: str = Field("127.0.0.1", description="Address to bind (loopback by default).")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0: ephemeral).")
    served_models: list[str] = Field(
        default_factory=list,
        description="Model ids listed by GET /v1/models (default: the backends' models).",
    )
    backends: list[BackendSpec] = Field(
        default_factory=list, description="The model servers, in index order (the action)."
    )
    policy: PolicySpec = Field(default_factory=PolicySpec)
    predictor: PredictorSpec = Field(default_factory=PredictorSpec)
    priority: Literal["none", "gittins"] = Field(
        "none",
        description="`gittins`: send each request's Gittins rank as vLLM's `priority` to "
        "backends with priority_scheduling (needs a predictor).",
    )
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    scrape: ScrapeSpec = Field(default_factory=ScrapeSpec)
    limits: LimitSpec = Field(default_factory=LimitSpec)
    api_keys: list[str] = Field(
        default_factory=list,
        description="Accepted bearer tokens; empty: no authentication (env SAGERL_API_KEYS, "
        "comma-separated, adds more).",
    )
    transition_log: str | None = Field(
        "runs/serve/transitions.jsonl",
        description="JSONL file of decisions with their outcomes (null: none).",
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="At shutdown, time in-flight streams get to finish, s."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    data_dir: str | None = Field(None, description="Full-data directory (tokenizers, warm-up).")
    emulate: EmulateSpec = Field(default_factory=EmulateSpec)

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.priority == "gittins" and self.predictor.name == NO_PREDICTOR:
            raise ValueError("priority 'gittins' needs a length predictor (predictor.name)")
        if not self.backends and self.emulate.count == 0:
            raise ValueError("no backends: list backends, or start emulated ones (--emulate N)")
        return self
