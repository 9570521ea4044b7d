"""The one interface every length predictor implements, and the table of predictor names.

``predict(request) -> LengthDistribution`` before a request is served, ``observe(request,
output_tokens)`` after it finishes (online learning), batched ``predict_many``. Predictors that
read the prompt's meaning derive from :class:`EmbeddingPredictor`, which adds the fast path
``predict_from_embeddings`` for callers holding precomputed vectors (simulations and RL
environments call it thousands of times per second: a neighbour search, not a transformer pass).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from sagerl.errors import SagerlError
from sagerl.predict.config import PredictorConfig
from sagerl.predict.distribution import LengthDistribution
from sagerl.predict.embedder import Embedder
from sagerl.predict.history import FifoHistory
from sagerl.predict.warmup import WarmupPool
from sagerl.registry import Registry
from sagerl.workload.request import Request

PREDICTORS: Registry[type[Predictor]] = Registry("predictor")


class Predictor(ABC):
    """Base of all predictors.

    Args:
        config: Thresholds and sizes (defaults: the paper's).
        embedder: Shared sentence encoder (embedding predictors only; one is built on demand).
    """

    name: ClassVar[str] = ""
    uses_embedding: ClassVar[bool] = False
    """True when predictions need the prompt text (and its vector)."""

    def __init__(self, config: PredictorConfig | None = None, embedder: Embedder | None = None):
        self.config = config or PredictorConfig()
        self.history: FifoHistory | None = None

    def fit(self, warmup: WarmupPool) -> None:  # noqa: B027  (optional hook)
        """Take the warm-up pool: searched at start-up, or training data for trained heads."""

    def predict(self, request: Request) -> LengthDistribution:
        """The output-length distribution of one request that has not run yet."""
        return self.predict_many([request])[0]

    @abstractmethod
    def predict_many(self, requests: Sequence[Request]) -> list[LengthDistribution]:
        """Predict several requests at once (shares the embedding pass and the search)."""

    def observe(self, request: Request, output_tokens: int) -> None:
        """Learn from a finished request (its true output length in tokens)."""
        self.observe_many([request], [output_tokens])

    def observe_many(self, requests: Sequence[Request], output_tokens: Sequence[int]) -> None:  # noqa: B027
        """Learn from several finished requests, in completion order (default: ignore)."""

    # ------------------------------------------------------------------ persistence
    def save_history(self, path: str | Path) -> None:
        """Write the online history (history-based predictors only)."""
        if self.history is None:
            raise SagerlError(f"predictor '{self.name}' keeps no history to save")
        self.history.save(path)

    def load_history(self, path: str | Path) -> None:
        """Replace the online history with one written by :meth:`save_history`."""
        if self.history is None:
            raise SagerlError(f"predictor '{self.name}' keeps no history to load")
        loaded = FifoHistory.load(path)
        if loaded.dim != self.history.dim:
            raise SagerlError(
                f"history file {path} has vectors of width {loaded.dim}, expected "
                f"{self.history.dim}"
            )
        self.history = loaded
        self._history_replaced()

    def _history_replaced(self) -> None:  # noqa: B027  (hook for derived state)
        """Rebuild anything derived from the history after a load."""


class EmbeddingPredictor(Predictor):
    """A predictor that reads the prompt through its all-MiniLM-L6-v2 vector."""

    uses_embedding = True

    def __init__(self, config: PredictorConfig | None = None, embedder: Embedder | None = None):
        super().__init__(config, embedder)
        self.embedder = embedder or Embedder(self.config.embedder)

    def embed(self, requests: Sequence[Request]) -> np.ndarray:
        """Prompt vectors ``(n, 384)`` (cached texts and preloaded data sets skip the model)."""
        texts = []
        for r in requests:
            if r.prompt_text is None:
                raise SagerlError(
                    f"predictor '{self.name}' needs prompt text, but request {r.id} "
                    f"({r.source or 'unknown source'}) has none"
                )
            texts.append(r.prompt_text)
        return self.embedder.embed(texts)

    def predict_many(self, requests: Sequence[Request]) -> list[LengthDistribution]:
        vectors = self.embed(requests)
        return self.predict_from_embeddings(vectors, _prompt_tokens(requests))

    def predict_from_embedding(self, vector: np.ndarray, prompt_tokens: int) -> LengthDistribution:
        """Predict one request from its precomputed prompt vector ``(384,)``."""
        return self.predict_from_embeddings(vector.reshape(1, -1), np.array([prompt_tokens]))[0]

    @abstractmethod
    def predict_from_embeddings(
        self, vectors: np.ndarray, prompt_tokens: np.ndarray
    ) -> list[LengthDistribution]:
        """Predict from ``(n, 384)`` unit vectors and ``(n,)`` prompt lengths (tokens)."""

    def observe_many(self, requests: Sequence[Request], output_tokens: Sequence[int]) -> None:
        if not requests:
            return
        self.observe_embeddings(
            self.embed(requests), _prompt_tokens(requests), np.asarray(output_tokens)
        )

    def observe_embeddings(  # trained heads learn offline
        self, vectors: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray
    ) -> None:
        """Learn from finished requests given their prompt vectors (default: ignore)."""


def _prompt_tokens(requests: Sequence[Request]) -> np.ndarray:
    return np.fromiter((r.prompt_tokens for r in requests), dtype=np.int64, count=len(requests))


def make_predictor(
    name: str, config: PredictorConfig | None = None, embedder: Embedder | None = None
) -> Predictor:
    """Build the predictor registered as ``name`` (an unknown name lists the valid ones)."""
    from sagerl.predict import predictors as _predictors  # noqa: F401  (fills the table)

    cls = PREDICTORS.get(name)
    cfg = (config or PredictorConfig()).model_copy(update={"name": name})
    return cls(cfg, embedder)
