"""Workloads: data sets, arrival processes, and the builder that combines them into requests.

Public API::

    load_pool(name, data_dir=None, **options) -> RequestPool   # one data set, cached
    list_datasets() -> list[str]
    build_workload(cfg: WorkloadConfig, data_dir=None, seed=0) -> list[Request]
    arrivals.poisson / gamma / piecewise / from_trace / rescale

See ``sagerl/workload/datasets.py`` for the data set names and ``config.py`` for the
``workload:`` config section.
"""

from sagerl.workload import arrivals
from sagerl.workload.build import build_workload
from sagerl.workload.config import ArrivalSpec, DatasetSpec, WorkloadConfig
from sagerl.workload.datasets import describe_datasets, list_datasets, load_pool
from sagerl.workload.pool import RequestPool
from sagerl.workload.request import Request

__all__ = [
    "ArrivalSpec",
    "DatasetSpec",
    "Request",
    "RequestPool",
    "WorkloadConfig",
    "arrivals",
    "build_workload",
    "describe_datasets",
    "list_datasets",
    "load_pool",
]
