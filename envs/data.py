"""What every episode of a placement environment shares: the workload, its prompt vectors, the
predictor's warm-up pool, and the streaming predictor adapter.

Building these is the expensive part (loading data sets, embedding prompts), so it happens once
per process and configuration: :func:`load_env_data` memoises its result, and the prompt vectors
themselves are cached on disk per data set by
:class:`~sagerl.predict.embedding_store.EmbeddingStore`. An episode then costs a neighbour search
per request, never a transformer pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.config import NO_PREDICTOR, EnvRunConfig
from sagerl.errors import ConfigError
from sagerl.workload.request import Request


@dataclass
class EnvData:
    """The workload an environment cuts its windows from.

    Attributes:
        requests: Requests in arrival order; ``requests[i].id == i``.
        n_train: Requests ``[0, n_train)`` are for training windows, the rest for evaluation.
        vectors: ``(len(requests), dim)`` prompt vectors (embedding predictors), else ``None``.
        warmup: The predictor's warm-up pool (with vectors when needed), or ``None``.
        embedder: The shared sentence encoder (embedding predictors), or ``None``.
    """

    requests: list[Request]
    n_train: int
    vectors: np.ndarray | None
    warmup: Any
    embedder: Any

    def window_starts(self, split: str, size: int) -> tuple[int, int]:
        """Inclusive range ``(lo, hi)`` of window start indices for ``split``."""
        if split == "train":
            lo, hi = 0, self.n_train - size
        elif split == "eval":
            lo, hi = self.n_train, len(self.requests) - size
        else:
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if hi < lo:
            raise ConfigError(
                f"the {split} part of the workload holds {max(0, hi - lo + size)} requests, fewer "
                f"than an episode window of {size}; raise workload.num_requests or shorten the "
                "window (env.episode_requests, or evaluation.episode_requests for evaluation), "
                "or change env.eval_fraction"
            )
        return lo, hi


_CACHE: dict[str, EnvData] = {}


def _key(cfg: EnvRunConfig) -> str:
    env = cfg.env
    return json.dumps(
        {
            "workload": cfg.workload.model_dump(),
            "seed": cfg.seed,
            "data_dir": cfg.data_dir,
            "predictor": env.predictor.model_dump(),
            "warmup": None if env.warmup is None else env.warmup.model_dump(),
            "eval_fraction": env.eval_fraction,
        },
        sort_keys=True,
        default=str,
    )


def load_env_data(cfg: EnvRunConfig, *, progress: bool = False) -> EnvData:
    """The shared data of ``cfg``'s environments (memoised per process and config)."""
    key = _key(cfg)
    data = _CACHE.get(key)
    if data is None:
        data = _CACHE[key] = _build(cfg, progress)
    return data


def _build(cfg: EnvRunConfig, progress: bool) -> EnvData:
    from sagerl import paths
    from sagerl.workload.build import build_workload

    data_dir = paths.data_dir(cfg.data_dir, must_exist=False)
    requests = build_workload(cfg.workload, data_dir, cfg.seed)
    n_train = round(len(requests) * (1.0 - cfg.env.eval_fraction))
    label = "+".join(sorted({d.name for d in cfg.workload.datasets}))
    return env_data_for(cfg, requests, n_train, label, progress=progress)


def env_data_for(
    cfg: EnvRunConfig,
    requests: list[Request],
    n_train: int,
    label: str,
    *,
    progress: bool = False,
) -> EnvData:
    """:class:`EnvData` over prebuilt ``requests`` (ids ``0..n-1`` in arrival order), with the
    predictor's warm-up pool and prompt vectors of ``cfg.env`` (used by shift streams, whose
    requests come from several workloads).

    Args:
        cfg: Supplies the data directory and the ``env`` section (predictor, warm-up).
        requests: The requests.
        n_train: Requests ``[0, n_train)`` form the training split.
        label: Name of the prompt-vector cache file (vectors are keyed by text, so any label
            works; one per data-set mix keeps files small).
        progress: Show a bar while embedding.
    """
    from sagerl import paths

    data_dir = paths.data_dir(cfg.data_dir, must_exist=False)
    name = cfg.env.predictor.name
    if name == NO_PREDICTOR:
        return EnvData(requests, n_train, None, None, None)

    from sagerl.predict import PREDICTORS, WarmupPool
    from sagerl.predict import predictors as _predictors  # noqa: F401  (fills the table)
    from sagerl.workload.datasets import load_pool

    uses_embedding = PREDICTORS.get(name).uses_embedding
    warm = None
    if cfg.env.warmup is not None:
        spec = cfg.env.warmup
        pool = load_pool(spec.name, data_dir, **spec.options)
        warm = WarmupPool.from_pool(pool).excluding(
            [r.prompt_id for r in requests if r.prompt_id],
            [r.prompt_text for r in requests if r.prompt_text],
        )
    if not uses_embedding:
        return EnvData(requests, n_train, None, warm, None)

    from sagerl.predict.embedder import Embedder
    from sagerl.predict.embedding_store import EmbeddingStore

    missing = next((r for r in requests if r.prompt_text is None), None)
    if missing is not None:
        raise ConfigError(
            f"env.predictor.name: '{name}' reads prompt text, but request {missing.id} "
            f"({missing.source or 'unknown source'}) has none; set workload.pair_text=true or "
            "use a length-only predictor (global, length-history, oracle)"
        )
    embedder = Embedder(cfg.env.predictor.embedder)
    store = EmbeddingStore(label, embedder.variant)
    vectors = store.ensure([r.prompt_text or "" for r in requests], embedder, progress)
    if warm is not None and len(warm) and warm.texts is not None:
        wstore = EmbeddingStore(cfg.env.warmup.name if cfg.env.warmup else label, embedder.variant)
        warm = warm.with_embeddings(wstore.ensure(warm.texts, embedder, progress))
    return EnvData(requests, n_train, vectors, warm, embedder)


class StreamPredictor:
    """The simulator's predictor hook (``predict`` on arrival, ``observe`` on finish) over a
    registered predictor, reading prompt vectors from :attr:`EnvData.vectors` by request id.

    :meth:`reset` rebuilds the predictor (empty history, warm-up pool fitted) and feeds it the
    requests that came before the window, so every episode starts from the same state for the
    same window: episodes are reproducible whatever ran before them.
    """

    def __init__(self, cfg: EnvRunConfig, data: EnvData) -> None:
        self.cfg = cfg.env.predictor
        self.data = data
        self.vectors = data.vectors
        self.predictor: Any = None
        self._make: Callable[[], Any] = self._factory()

    def _factory(self) -> Callable[[], Any]:
        from sagerl.predict import make_predictor

        def make() -> Any:
            predictor = make_predictor(self.cfg.name, self.cfg, self.data.embedder)
            if self.data.warmup is not None:
                predictor.fit(self.data.warmup)
            return predictor

        return make

    def reset(self, history: Sequence[Request]) -> None:
        """A fresh predictor that has seen ``history`` (finished requests, in order)."""
        self.predictor = self._make()
        if not history:
            return
        outputs = np.fromiter((r.output_tokens for r in history), np.int64, len(history))
        if self.vectors is not None:
            ids = np.fromiter((r.id for r in history), np.int64, len(history))
            prompts = np.fromiter((r.prompt_tokens for r in history), np.int64, len(history))
            self.predictor.observe_embeddings(self.vectors[ids], prompts, outputs)
        else:
            self.predictor.observe_many(list(history), outputs.tolist())

    def predict(self, request: Request) -> Any:
        if self.vectors is not None:
            return self.predictor.predict_from_embedding(
                self.vectors[request.id], request.prompt_tokens
            )
        return self.predictor.predict(request)

    def observe(self, request: Request, output_tokens: int) -> None:
        if self.vectors is not None:
            self.predictor.observe_embeddings(
                self.vectors[request.id : request.id + 1],
                np.array([request.prompt_tokens]),
                np.array([output_tokens]),
            )
        else:
            self.predictor.observe(request, output_tokens)
