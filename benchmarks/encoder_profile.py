"""Where the prompt encoder's time goes: onnxruntime's per-operator profile, and cost per run.

Usage (from the repository root; ``pip install -e '.[predict]'`` or ``PYTHONPATH=.``)::

    python benchmarks/encoder_profile.py [--prompts 320] [--json PATH]

Three measurements of the default embedder (``EmbedderConfig()``: int8 ONNX, 64 tokens head and
tail, one thread), all on the calling thread's CPU clock:

* **per operator**: the first ``--prompts`` prompts of the CASTILLO test stream (Llama-3.1-8B),
  embedded twice in the embedder's own planned batches of 16 through a session with
  onnxruntime's profiler on; each operator type's share of the kernels' time, and the kernels'
  sum against the whole ``run`` (the rest is the session's own overhead);
* **per run**: synthetic inputs of 4-64 tokens in batches of 1, 4 and 16 (best of 5 x 20
  runs): a fixed cost per run plus a cost per token;
* **ShareGPT prompts in small batches**, as the live router's predictor embeds them (the first
  ``--prompts`` turns of the ShareGPT evaluation stream in batches of 1, 4 and 16; best of 3).

Needs the full data (``SAGERL_DATA`` or ``../shared/data``) for the two real-prompt parts.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sagerl.commands.common import print_table, write_json
from sagerl.predict.config import EmbedderConfig
from sagerl.predict.data import castillo_eval, sharegpt_eval, stream_texts
from sagerl.predict.embedder import Embedder, encoder_session, session_runner
from sagerl.predict.minilm import ensure_onnx

MODEL = "meta-llama--Llama-3.1-8B-Instruct"


def operator_profile(texts: list[str]) -> dict:
    """Per-operator shares of the kernels' time over two embedding passes of ``texts``."""
    with tempfile.TemporaryDirectory() as tmp:
        session = encoder_session(ensure_onnx(quantized=True), 1, str(Path(tmp) / "ort"))
        emb = Embedder(EmbedderConfig(), session=session)
        start = time.thread_time()
        for _ in range(2):
            emb.embed(texts, use_cache=False)
        run_ms = 1000 * (time.thread_time() - start) / (2 * len(texts))
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    kernels_us = sum(per_op.values())
    return {
        "prompts": len(texts),
        "embed_ms_per_prompt": run_ms,
        "kernels_ms_per_prompt": kernels_us / 1000 / (2 * len(texts)),
        "shares": {op: us / kernels_us for op, us in per_op.most_common()},
    }


def run_costs(runner) -> list[dict]:  # type: ignore[no-untyped-def]
    """Best time per run of synthetic ``[CLS] x .. [SEP]`` inputs by length and batch size."""
    rows = []
    for length in (4, 16, 32, 64):
        for batch in (1, 4, 16):
            ids = np.full((batch, length), 1000, dtype=np.int64)
            ids[:, 0], ids[:, -1] = 101, 102
            mask = np.ones_like(ids)
            for _ in range(5):
                runner(ids, mask)
            best = float("inf")
            for _ in range(5):
                start = time.thread_time()
                for _ in range(20):
                    runner(ids, mask)
                best = min(best, (time.thread_time() - start) / 20)
            rows.append(
                {"tokens": length, "batch": batch, "ms_per_run": 1000 * best,
                 "ms_per_sequence": 1000 * best / batch}
            )  # fmt: skip
    return rows


def small_batches(texts: list[str]) -> list[dict]:
    """Embedding cost per ShareGPT prompt in batches of 1, 4 and 16 (best of 3 passes)."""
    emb = Embedder(EmbedderConfig())
    emb.embed(texts[:16], use_cache=False)
    rows = []
    for batch in (1, 4, 16):
        best = float("inf")
        for _ in range(3):
            start = time.thread_time()
            for i in range(0, len(texts), batch):
                emb.embed(texts[i : i + batch], use_cache=False)
            best = min(best, time.thread_time() - start)
        rows.append({"batch": batch, "ms_per_prompt": 1000 * best / len(texts)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=320, help="real prompts per data set")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args()
    if args.prompts < 16:
        raise SystemExit(f"--prompts must be >= 16, got {args.prompts}")

    castillo = stream_texts(castillo_eval(MODEL).requests)[: args.prompts]
    profile = operator_profile(castillo)
    print_table(
        f"int8 encoder, {profile['prompts']} CASTILLO prompts in batches of 16: "
        f"{profile['embed_ms_per_prompt']:.2f} ms per prompt, kernels "
        f"{profile['kernels_ms_per_prompt']:.2f} ms",
        [{"operator": op, "share": f"{share:.1%}"} for op, share in profile["shares"].items()],
    )
    runs = run_costs(session_runner(encoder_session(ensure_onnx(quantized=True), 1)))
    print_table("one encoder run by input size (ms)", runs)
    sharegpt = stream_texts(sharegpt_eval().requests)[: args.prompts]
    small = small_batches(sharegpt)
    print_table(f"{len(sharegpt)} ShareGPT prompts by batch size", small)
    write_json(args.json, {"operators": profile, "runs": runs, "sharegpt_batches": small})


if __name__ == "__main__":
    main()
