"""Ray as a backend: the compare matrix as Ray tasks, and the Ray session both backends use.

``python -m sagerl compare --backend ray`` runs each (policy, rate, seed) cell as one Ray task
calling the very function the local pool calls (:func:`sagerl.compare.runner.run_job`), so a
sweep spreads over every CPU of a cluster and its records are identical to a local run's: the
workloads are built once by the driver and shipped through Ray's object store, and each worker
process rebuilds the predictors' shared parts from them exactly as a spawned local worker does.

:func:`ray_session` starts a local Ray (or connects to a cluster with ``address``) for the
duration of a command; ``train --backend rllib`` uses it too. Ray is optional: without it,
:func:`require_ray` raises a one-line :class:`~sagerl.errors.SagerlError` saying how to install
it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from sagerl.errors import SagerlError

INSTALL_HINT = 'pip install -e ".[ray]"'

FORWARDED_ENV = ("SAGERL_DATA", "SAGERL_CACHE")
"""Environment variables of the driver that a cluster's workers get too (where the data
directory and the cache are; the paths must exist on every node)."""

Log = Callable[[str], None]


def require_ray(what: str = "--backend ray", module: str = "ray") -> None:
    """Raise a one-line :class:`SagerlError` naming ``what`` unless ``module`` imports."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise SagerlError(f"{what} needs Ray: {INSTALL_HINT}") from None


@contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    ship: Sequence[ModuleType] = (),
    log: Log | None = None,
) -> Iterator[dict[str, float]]:
    """Ray for the duration of the block; yields the cluster's resources.

    Args:
        address: An existing cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``); ``None``
            starts a local Ray that ends with the block.
        num_cpus: CPUs of the local Ray (``None``: all of this machine's); ignored with
            ``address``.
        ship: Packages sent to the cluster's workers (Ray's ``py_modules``), so the nodes run
            the driver's code without installing it; only with ``address`` (a local Ray's
            workers import the driver's code directly). :data:`FORWARDED_ENV` goes along.
        log: Receives one line saying where Ray runs.

    An already initialised Ray (a caller's own session) is used as is and left running.
    """
    import ray

    if ray.is_initialized():
        yield dict(ray.cluster_resources())
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    common: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,
        "log_to_driver": True,
    }
    if address:
        runtime_env: dict[str, Any] = {}
        if ship:
            runtime_env["py_modules"] = [_package_dir(m) for m in ship]
        env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        if env_vars:
            runtime_env["env_vars"] = env_vars
        _token_auth_if_available()
        try:
            ray.init(address=address, runtime_env=runtime_env or None, **common)
        except Exception as exc:  # ConnectionError, AuthenticationError, ValueError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SagerlError(
                f"cannot connect to the Ray cluster at {address}: {first} (is it running? "
                "with token authentication, set RAY_AUTH_TOKEN or copy the cluster's "
                "~/.ray/auth_token here)"
            ) from None
        where = f"Ray cluster at {address}"
    else:
        # "local": a new Ray of our own, even where a `ray start` cluster runs on this machine.
        ray.init(address="local", num_cpus=num_cpus, **common)
        where = "local Ray"
    try:
        resources = dict(ray.cluster_resources())
        if log:
            nodes = len([n for n in ray.nodes() if n.get("Alive")])
            log(
                f"{where}: {nodes} node(s), {resources.get('CPU', 0):g} CPUs, "
                f"{resources.get('GPU', 0):g} GPUs"
            )
        yield resources
    finally:
        ray.shutdown()


def _token_auth_if_available() -> None:
    """Connect with the local Ray token when there is one (``~/.ray/auth_token``,
    ``RAY_AUTH_TOKEN``): Ray 2.60 starts clusters with token authentication but connects to an
    existing one without it unless ``RAY_AUTH_MODE=token`` is set. An explicit
    ``RAY_AUTH_MODE`` is left alone."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: its own defaults apply
        return
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _package_dir(module: ModuleType) -> str:
    """The directory of a package (what Ray's ``py_modules`` uploads)."""
    path = getattr(module, "__path__", None)
    if not path:
        raise ValueError(f"{module.__name__} is not a package")
    return str(next(iter(path)))


# ----------------------------------------------------------------------------- compare cells
def _cell(token: str, holder: list[Any], job: Any) -> dict[str, Any]:
    """One matrix cell in a Ray worker: load the comparison's state once per worker process
    (``holder[0]`` is its object reference), then the same cell function as a local run."""
    import ray

    from sagerl.compare import runner

    if runner._STATE.get("token") != token:
        runner._init_worker(ray.get(holder[0]))
    return runner.run_job(job)


def run_cells(
    state: dict[str, Any],
    jobs: Sequence[Any],
    *,
    max_in_flight: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Run ``jobs`` (matrix cells) as Ray tasks; yields their records as they finish.

    Args:
        state: The comparison's shared state (config, workloads, rates, evaluated requests,
            saturation), put once in the object store.
        jobs: The cells.
        max_in_flight: Tasks submitted at a time (``None``: all at once, Ray queues them).

    A task that fails (a worker lost with its node, say) is retried by Ray; an error raised
    by the simulation itself propagates.
    """
    import ray

    token = uuid.uuid4().hex
    ref = ray.put({**state, "token": token})
    task = ray.remote(num_cpus=1, max_retries=2)(_cell)
    pending = list(jobs)
    limit = max_in_flight or len(pending)
    running: list[Any] = []
    while pending or running:
        while pending and len(running) < limit:
            running.append(task.remote(token, [ref], pending.pop(0)))
        done, running = ray.wait(running, num_returns=1)
        for finished in done:
            yield ray.get(finished)


__all__ = ["INSTALL_HINT", "ray_session", "require_ray", "run_cells"]
