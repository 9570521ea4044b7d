"""Output-length prediction: distributions, predictors and their evaluation.

SageSched's first pillar is a predictor that returns a *distribution* of output lengths. Every
predictor here has one interface (:class:`~sagerl.predict.base.Predictor`)::

    predictor = make_predictor("sagesched", PredictorConfig())
    predictor.fit(warmup_pool)                    # public data for start-up / training
    dist = predictor.predict(request)             # LengthDistribution
    predictor.observe(request, output_tokens)     # learn online once it finished

Heavy dependencies (torch, onnxruntime, faiss) are imported only by the parts that need them.
"""

from sagerl.predict.base import PREDICTORS, EmbeddingPredictor, Predictor, make_predictor
from sagerl.predict.config import EmbedderConfig, PredictorConfig, TrainConfig
from sagerl.predict.distribution import DEFAULT_BIN_EDGES, LengthDistribution
from sagerl.predict.warmup import WarmupPool, check_disjoint

__all__ = [
    "DEFAULT_BIN_EDGES",
    "PREDICTORS",
    "EmbedderConfig",
    "EmbeddingPredictor",
    "LengthDistribution",
    "Predictor",
    "PredictorConfig",
    "TrainConfig",
    "WarmupPool",
    "check_disjoint",
    "make_predictor",
]


def predictor_names() -> list[str]:
    """All registered predictor names."""
    from sagerl.predict import predictors as _predictors  # noqa: F401  (fills the table)

    return PREDICTORS.names()
