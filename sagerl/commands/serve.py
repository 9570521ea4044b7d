"""``python -m sagerl serve``: the live router (OpenAI API) in front of vLLM/SGLang servers."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the live router (OpenAI-compatible) in front of model servers",
        description="Route OpenAI API requests to the config's backends with a placement policy "
        "(SageSched, a heuristic, or an exported ONNX policy). --emulate N starts N emulated "
        "vLLM servers on loopback and routes to them (demos and tests).",
    )
    parser.add_argument(
        "--config", "-c", help="serve config YAML (e.g. configs/serve-emulated.yaml)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. policy.name=sagesched",
    )
    parser.add_argument("--host", help="address to bind (default: the config's, 127.0.0.1)")
    parser.add_argument("--port", "-p", type=int, help="port (default: the config's, 8000)")
    parser.add_argument(
        "--emulate", type=int, metavar="N", help="start N emulated backends on loopback too"
    )
    parser.add_argument(
        "--time-scale", type=float, help="emulated backends: simulated seconds per real second"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from sagerl.live.config import ServeConfig
    from sagerl.live.runner import new_loop
    from sagerl.live.serving import start_cluster
    from sagerl.schema import load_config

    overrides = list(args.overrides)
    if args.host:
        overrides.append(f"host={args.host}")
    if args.port is not None:
        overrides.append(f"port={args.port}")
    if args.emulate is not None:
        overrides.append(f"emulate.count={args.emulate}")
    if args.time_scale is not None:
        overrides.append(f"emulate.time_scale={args.time_scale}")
    cfg = load_config(ServeConfig, args.config, overrides)
    logging.basicConfig(
        level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loop = new_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        cluster = await start_cluster(cfg)
        b = cluster.router.registry.backends
        print(
            f"sagerl router on {cluster.url} -> {len(b)} backend(s): "
            + ", ".join(f"{x.label} ({x.spec.gpu}, {x.spec.engine})" for x in b)
            + f"; policy {cluster.router.policy.name}, predictor {cfg.predictor.name}",
            flush=True,
        )
        await cluster.wait()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0
