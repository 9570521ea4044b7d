"""The live scheduler: an OpenAI-compatible router in front of vLLM/SGLang servers.

Modules, in the order a request meets them:

=====================  ============================================================================
``config``             :class:`ServeConfig` (backends, policy, predictor, limits, emulated backends)
``app``                the router: routes, validation, forwarding, streaming, ``/metrics``
``prediction``         prompt tokens (tiktoken) and batched length prediction off the event loop
``views``              :class:`~sagerl.view.ReplicaView` from the ledger plus fresh scrapes
``policy_runtime``     placement by name, or an exported ONNX policy (:class:`PolicyRuntime`)
``ledger``             router-observed state: every accepted request until it completes or fails
``scrape``             pure Prometheus parser, metric aliases per engine, the scraper task
``backends``           configured servers, speed hints, health
``upstream``           keep-alive HTTP/1.1 client to the backends (httptools), streams piped
``translog``           JSONL transition log (decision + outcome) for the online learner
``emulator``           an OpenAI-compatible server timed by the simulator's replica model
``runner``/``serving`` uvicorn plumbing: several servers in one loop, start/stop, test threads
``loadgen``            a cheap streaming client for load tests (``benchmarks/router_load.py``)
=====================  ============================================================================

Nothing here imports torch; the predictor stack is imported only when a predictor is configured.
"""

from sagerl.live.config import BackendSpec, ServeConfig

__all__ = ["BackendSpec", "ServeConfig"]
