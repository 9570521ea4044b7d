"""Compare scheduling policies on identical workloads: ``python -m sagerl compare``.

The matrix is policies × arrival rates × seeds (:mod:`sagerl.compare.runner`), configured by the
``compare:`` section of a run config (:mod:`sagerl.compare.config`); results become tables,
CSV, plots and TensorBoard scalars (:mod:`sagerl.compare.report`).
"""

from sagerl.compare.config import CompareConfig, CompareSection, PolicySpec, PredictorSpec
from sagerl.compare.runner import estimate_saturation, run_matrix

__all__ = [
    "CompareConfig",
    "CompareSection",
    "PolicySpec",
    "PredictorSpec",
    "estimate_saturation",
    "run_matrix",
]
