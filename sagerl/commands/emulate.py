"""``python -m sagerl emulate``: an OpenAI-compatible server timed by the simulator's replica."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "emulate",
        help="run an emulated vLLM server (simulated timing, real HTTP)",
        description="Serve the OpenAI API on loopback with timing from the simulator's replica "
        "model of the given GPU and model, in real time times --time-scale; exports vLLM's "
        "metric names and honours `priority` with --priority.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument("--port", "-p", type=int, default=8001, help="port (0: ephemeral)")
    parser.add_argument("--gpu", default="A100", help="GPU kind (A40, A100, H100, H800, H200)")
    parser.add_argument("--model", default="llama-3.1-8b", help="model architecture")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel degree")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="simulated seconds per real second"
    )
    parser.add_argument(
        "--priority",
        action="store_true",
        help="emulate vLLM --scheduling-policy priority (honour the `priority` field)",
    )
    parser.add_argument(
        "--mean-output-tokens", type=float, default=128.0,
        help="mean output length when a request sets no ignore_eos",
    )  # fmt: skip
    parser.add_argument("--served-model-name", help="model id reported (default: --model)")
    parser.add_argument(
        "--count", type=int, default=1,
        help="servers to start in this process, on consecutive ports (ephemeral with --port 0)",
    )  # fmt: skip
    parser.add_argument(
        "--stream-interval-ms", type=float, default=5.0,
        help="real milliseconds between token flushes while decoding",
    )  # fmt: skip
    parser.add_argument(
        "--timing",
        action="store_true",
        help="start each stream with the SSE comment `: emulator-ttft-us=N` (this server's own "
        "time to first token; benchmarks/router_load.py uses it)",
    )
    parser.add_argument(
        "--old-metric-names",
        action="store_true",
        help="export vllm:gpu_cache_usage_perc (vLLM < 0.10) instead of kv_cache_usage_perc",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from sagerl.errors import ConfigError
    from sagerl.hardware import get_gpu, get_model
    from sagerl.live.config import TokenizerSpec
    from sagerl.live.emulator import bind_emulators
    from sagerl.live.prediction import TokenCounter
    from sagerl.live.runner import new_loop, serve_until_stopped

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.time_scale <= 0:
        raise ConfigError(f"--time-scale must be > 0, got {args.time_scale}")
    get_gpu(args.gpu)
    get_model(args.model)
    if args.count < 1:
        raise ConfigError(f"--count must be >= 1, got {args.count}")
    tokens = TokenCounter(TokenizerSpec())
    kv_metric = "vllm:gpu_cache_usage_perc" if args.old_metric_names else "vllm:kv_cache_usage_perc"
    servers = bind_emulators(
        args.count,
        args.host,
        args.port,
        gpu=args.gpu,
        model=args.model,
        time_scale=args.time_scale,
        priority_scheduling=args.priority,
        mean_output_tokens=args.mean_output_tokens,
        served_model=args.served_model_name,
        kv_metric=kv_metric,
        tokens=tokens,
        tp=args.tp,
        stream_interval_s=args.stream_interval_ms / 1000.0,
        timing=args.timing,
    )
    for s in servers:
        print(s.describe(), flush=True)
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve_until_stopped([[(s.server, s.sock) for s in servers]]))
    finally:
        loop.close()
    return 0
