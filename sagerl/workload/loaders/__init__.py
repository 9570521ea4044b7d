"""Loader functions, one module per source; importing this package registers every name.

Each module registers its names with :func:`sagerl.workload.catalog.dataset`. Add a source by
adding a module here and importing it below.
"""

from sagerl.workload.loaders import azure, castillo, codealpaca, servegen, sharegpt, vidur

__all__ = ["azure", "castillo", "codealpaca", "servegen", "sharegpt", "vidur"]
