"""``python -m sagerl export``: a trained policy as ONNX plus a JSON sidecar, for the router."""

from __future__ import annotations

import argparse

from sagerl.commands.common import print_table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a trained policy (runs/<name>) as ONNX + JSON sidecar for the router",
        description="Write the trained actor of runs/<name> as DIR/policy.onnx (float32 "
        "[batch, features] -> [batch, replicas] logits) and DIR/policy.json (feature encoder, "
        "teacher, training config, source checkpoint, checksum, parity). Before writing, the "
        "ONNX model must pick the torch policy's action on --verify recorded observations. "
        "Serve it with `policy: {name: onnx, path: DIR/policy.onnx}`.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the training run, e.g. runs/default")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="SB3 archive to export (default: the run's latest)"
    )
    parser.add_argument(
        "--verify",
        type=int,
        default=10_000,
        metavar="N",
        help="recorded observations of the parity check (default 10000; 0 skips it)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the recording episodes (default 0)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agents.export import export_run

    result = export_run(
        args.run_dir,
        args.out,
        checkpoint=args.checkpoint,
        verify=args.verify,
        seed=args.seed,
        log=print,
    )
    side = result.sidecar
    p = result.parity
    parity = (
        f"{p.agreed}/{p.compared} agree" + (f" (+{p.ties} ties)" if p.ties else "")
        if p.compared
        else "not checked (--verify 0)"
    )
    print_table(
        f"exported {side['source'].get('run_dir')} ({side['backend']}, "
        f"{side['source'].get('num_timesteps', '?')} steps)",
        [
            {
                "file": str(result.onnx_path),
                "size": _size(result.onnx_bytes),
                "parity with torch": parity,
                "sha256": side["onnx_sha256"][:16] + "…",
                "onnxruntime p50 (1 obs, 1 thread)": f"{result.latency_us:.1f} µs",
            },
            {
                "file": str(result.sidecar_path),
                "size": _size(result.sidecar_path.stat().st_size),
                "parity with torch": f"max |Δlogit| {p.max_abs_logit_diff:.2g}",
                "sha256": "",
                "onnxruntime p50 (1 obs, 1 thread)": "",
            },
        ],
    )
    encoder = side["encoder"]["spec"]
    cfg = side["training_config"]
    predictor = cfg.get("env", {}).get("predictor", {}).get("name", "?")
    print(
        f"features: version {encoder['version']}, {side['observation_size']} entries, "
        f"{side['max_replicas']} replica slots; teacher estimates: {side['teacher'] or 'none'}; "
        f"trained with predictor '{predictor}'"
    )
    cluster = ", ".join(
        f"{r.get('count', 1)} x {r.get('gpu')} {r.get('model')}"
        for r in cfg.get("cluster", {}).get("replicas", [])
    )
    print(f"trained cluster (backend i = replica i, in this order): {cluster or '?'}")
    print(
        "serve it (python -m sagerl serve --config ...) with at most "
        f"{side['max_replicas']} backends listed in that order, and in the serve config:"
    )
    print(f"  policy: {{name: onnx, path: {result.onnx_path}}}")
    write_json(
        args.json,
        {
            "onnx": str(result.onnx_path),
            "sidecar": str(result.sidecar_path),
            "onnx_bytes": result.onnx_bytes,
            "onnx_sha256": side["onnx_sha256"],
            "parity": p.to_dict(),
            "latency_us": result.latency_us,
            "timings": result.timings,
            "source": side["source"],
        },
    )
    return 0


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"
