"""Time the operators of one decoder layer of a model-shaped network on a real GPU.

Random bf16 weights cost the same as trained ones, so this measures what the step-time model
(``sagerl.hardware``) predicts: the linear layers (QKV, output projection, gated MLP) against the
number of tokens in the batch, causal prefill attention against the chunk length, and decode
attention against batch size and context length. The output JSON has the same shape as the
``vidur_profiling`` tables we calibrate against (milliseconds per operator per layer), so
``sagerl.calibration`` can report the model's error on it.

Runs only where torch sees a CUDA device (in this project: the lent H200). Usage::

    python benchmarks/gpu_profile.py --out measured.json [--models llama-3.1-8b,qwen2.5-32b]

Needs torch only (no sagerl import), so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

# Published architectures: hidden, heads, kv heads, head dim, intermediate, layers.
SHAPES = {
    "llama-3.1-8b": (4096, 32, 8, 128, 14336, 32),
    "llama-2-7b": (4096, 32, 32, 128, 11008, 32),
    "qwen2.5-32b": (5120, 40, 8, 128, 27648, 64),
}
TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
CHUNKS = [128, 256, 512, 1024, 2048, 4096, 8192]
DECODE = [(b, c) for b in (1, 8, 32, 128) for c in (256, 1024, 4096)]


def bench(fn, warmup: int = 3, iters: int = 10) -> float:
    """Median milliseconds of ``fn`` over CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def profile_model(name: str) -> dict:
    hidden, heads, kv_heads, head_dim, inter, layers = SHAPES[name]
    dev, dt = "cuda", torch.bfloat16
    w_qkv = torch.randn(hidden, (heads + 2 * kv_heads) * head_dim, device=dev, dtype=dt) * 0.02
    w_o = torch.randn(heads * head_dim, hidden, device=dev, dtype=dt) * 0.02
    w_up = torch.randn(hidden, 2 * inter, device=dev, dtype=dt) * 0.02
    w_down = torch.randn(inter, hidden, device=dev, dtype=dt) * 0.02
    linear = []
    for t in TOKENS:
        x = torch.randn(t, hidden, device=dev, dtype=dt)
        h = torch.randn(t, inter, device=dev, dtype=dt)
        a = torch.randn(t, heads * head_dim, device=dev, dtype=dt)
        linear.append(
            {
                "num_tokens": t,
                "attn_pre_proj": bench(lambda x=x: x @ w_qkv),
                "attn_post_proj": bench(lambda a=a: a @ w_o),
                "mlp_up_proj": bench(lambda x=x: x @ w_up),
                "mlp_act": bench(lambda h=h: F.silu(h) * h),
                "mlp_down_proj": bench(lambda h=h: h @ w_down),
            }
        )
    prefill = []
    for c in CHUNKS:
        q = torch.randn(1, heads, c, head_dim, device=dev, dtype=dt)
        k = torch.randn(1, kv_heads, c, head_dim, device=dev, dtype=dt)
        v = torch.randn(1, kv_heads, c, head_dim, device=dev, dtype=dt)
        prefill.append(
            {
                "chunk": c,
                "ms": bench(
                    lambda q=q, k=k, v=v, g=kv_heads != heads: F.scaled_dot_product_attention(
                        q, k, v, is_causal=True, enable_gqa=g
                    )
                ),
            }
        )
    decode = []
    for b, ctx in DECODE:
        q = torch.randn(b, heads, 1, head_dim, device=dev, dtype=dt)
        k = torch.randn(b, kv_heads, ctx, head_dim, device=dev, dtype=dt)
        # NOTE: a distinct V, or V's reads hit the L2 lines K just brought in.
        v = torch.randn(b, kv_heads, ctx, head_dim, device=dev, dtype=dt)
        # Grouped-query attention reads each KV head once (as paged kernels do).
        gqa = kv_heads != heads
        decode.append(
            {
                "batch": b,
                "context": ctx,
                "ms": bench(
                    lambda q=q, k=k, v=v, g=gqa: F.scaled_dot_product_attention(
                        q, k, v, enable_gqa=g
                    )
                ),
            }
        )
    # One whole decoder layer (norm, QKV, attention over a KV cache, O, norm, gated MLP,
    # residual adds), as an engine iteration runs it, replayed from a CUDA graph as vLLM does
    # for decode. Decode: `batch` sequences with `context` cached tokens each; prefill: one
    # chunk of `chunk` tokens with no prior context.
    w_ln = torch.ones(hidden, device=dev, dtype=dt)
    q_w, kv_w = heads * head_dim, kv_heads * head_dim

    def layer(x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, causal: bool):
        h = F.rms_norm(x, (hidden,), w_ln)
        qkv = h @ w_qkv
        q, _k, _v = qkv.split([q_w, kv_w, kv_w], dim=-1)
        q = q.view(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)
        attn = F.scaled_dot_product_attention(
            q, k_cache, v_cache, is_causal=causal, enable_gqa=kv_heads != heads
        )
        x = x + attn.transpose(1, 2).reshape(x.shape[0], x.shape[1], q_w) @ w_o
        h = F.rms_norm(x, (hidden,), w_ln)
        gate_up = h @ w_up
        gate, up = gate_up.split([inter, inter], dim=-1)
        return x + (F.silu(gate) * up) @ w_down

    def graphed(fn):
        fn()  # warm-up on the side stream is done by bench(); capture once
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            fn()
        return graph.replay

    layer_decode: list | str = []
    layer_prefill: list | str = []
    try:
        for b, ctx in DECODE:
            x = torch.randn(b, 1, hidden, device=dev, dtype=dt)
            kc = torch.randn(b, kv_heads, ctx, head_dim, device=dev, dtype=dt)
            vc = torch.randn(b, kv_heads, ctx, head_dim, device=dev, dtype=dt)
            step = graphed(lambda x=x, kc=kc, vc=vc: layer(x, kc, vc, False))
            layer_decode.append({"batch": b, "context": ctx, "ms": bench(step)})
        for c in CHUNKS:
            x = torch.randn(1, c, hidden, device=dev, dtype=dt)
            kc = torch.randn(1, kv_heads, c, head_dim, device=dev, dtype=dt)
            vc = torch.randn(1, kv_heads, c, head_dim, device=dev, dtype=dt)
            layer_prefill.append(
                {"chunk": c, "ms": bench(lambda x=x, kc=kc, vc=vc: layer(x, kc, vc, True))}
            )
    except Exception as exc:  # keep the operator tables even if graph capture fails
        layer_decode = layer_prefill = f"failed: {exc!r}"
    return {
        "model": name,
        "layer_decode_ms_graph": layer_decode,
        "layer_prefill_ms": layer_prefill,
        "layers": layers,
        "linear_ms_per_layer": linear,
        "prefill_attn_ms_per_layer": prefill,
        "decode_attn_ms_per_layer": decode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default="llama-3.1-8b,llama-2-7b,qwen2.5-32b")
    args = parser.parse_args()
    start = time.time()
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "models": [profile_model(m) for m in args.models.split(",")],
    }
    result["wall_s"] = time.time() - start
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({"gpu": result["gpu"], "wall_s": result["wall_s"]}))


if __name__ == "__main__":
    main()
