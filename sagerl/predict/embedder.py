"""Prompt text -> unit vector with all-MiniLM-L6-v2, fast enough to sit on the request path.

The paper embeds every prompt before scheduling it (0.22 ms on a GPU). On one CPU thread the
transformer dominates the predictor's cost and grows linearly with the prompt's token count, so
the embedder offers three backends of the same model (``torch`` reference, ``onnx`` fp32,
``onnx-int8`` with int8 weights and dynamically quantised activations), a configurable
truncation length, and two caches:

* an LRU cache of recent prompt texts (repeated prompts, and ``observe`` right after
  ``predict``, cost a dictionary lookup);
* preloaded vectors (:meth:`Embedder.preload`) for whole data sets, computed once by
  :class:`~sagerl.predict.embedding_store.EmbeddingStore`, so simulations and RL environments
  pay a neighbour search per request, not a transformer pass.

Batches are sorted by token count before padding, so a batch of mixed prompts wastes little
compute on padding.

NOTE: with ``onnx-int8`` the activation scale is computed over the whole batch, so a prompt's
vector differs slightly (cosine ~0.999) depending on what it was batched with; every result is
still deterministic for the same call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sagerl.predict.config import EmbedderConfig
from sagerl.predict.minilm import MODEL_NAME, model_dir

log = logging.getLogger(__name__)

EMBED_DIM = 384
"""Width of all-MiniLM-L6-v2's sentence embedding."""

CHARS_PER_TOKEN_BOUND = 32
"""No WordPiece token of ordinary text spans this many characters on average."""

WINDOW_CHARS_PER_TOKEN = 6
"""Characters per kept token tokenised first at each end of a long prompt (English and code
average 3.5-4.5 per WordPiece token). A window that yields too few tokens falls back to the
safe bound above, so this changes speed only, never the tokens; 6 tokenised CASTILLO and
ShareGPT prompts fastest (4 falls back too often, 8 tokenises more than needed)."""

PAD_SLACK = 1.25
"""A batch is split where its longest prompt would exceed this multiple of its shortest."""

ORT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
"""onnxruntime graph rewrites left out. Its fused SkipLayerNormalization kernel took 10x the time
of a plain Add + LayerNormalization on this CPU (1.2 ms against 0.11 ms for 752 rows of 384), 17%
of the int8 encoder's time; without it a batch of 16 CASTILLO prompts runs 15-20% faster. The
function is the same (fp32 vectors: cosine 1.0000 to the fused graph's); int8 vectors move by
int8 rounding noise (see :data:`ONNX_NUMERICS`)."""

ONNX_NUMERICS = 2
"""Revision of the ONNX backends' numbers, part of :attr:`Embedder.variant` (so of every
embedding cache's file name). Bump it when the exported graph or the session's rewrites
change: int8 activation rounding turns even a float-rounding change into cosine ~0.999 per
vector (0.99 at worst), about what batching a prompt with different prompts does, so vectors
cached by an older revision are not mixed with new ones. Revision 2: SkipLayerNormalization
no longer fused (CASTILLO CRPS 185.2 against revision 1's 184.8, ShareGPT 90.2 both)."""

RunFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def encoder_session(path: str | Path, threads: int, profile_prefix: str | None = None) -> Any:
    """The onnxruntime CPU session the ONNX backends run the encoder in: ``threads`` intra-op
    threads, sequential, every graph rewrite but :data:`ORT_DISABLED_OPTIMIZERS`. With
    ``profile_prefix`` onnxruntime also records each operator's time
    (``benchmarks/encoder_profile.py``); otherwise the options are the run time's."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(
        str(path),
        opts,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
    )


def session_runner(session: Any) -> RunFn:
    """The embedder's run function over an :func:`encoder_session`."""

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]

    return run


def plan_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Group prompt indices into forward passes that waste little compute on padding.

    On a CPU thread the model's cost is linear in the padded token count and a pass has little
    fixed overhead, so padding a short prompt to a long one's length costs more than a second
    pass. Prompts are sorted by length and a group closes at ``batch_size`` prompts, or when the
    next prompt is more than ``PAD_SLACK`` times (plus 8 tokens) longer than the group's first.
    """
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for i in range(1, order.size + 1):
        if (
            i == order.size
            or i - start >= batch_size
            or lengths[order[i]] > PAD_SLACK * lengths[order[start]] + 8
        ):
            groups.append(order[start:i])
            start = i
    return groups


def text_key(text: str) -> bytes:
    """A 16-byte digest of a prompt text, the key of every embedding cache."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised, float32).

    Args:
        config: Backend, truncation length, threads, batch size and LRU size.
        session: An onnxruntime session of the backend's model to run instead of building one
            (:func:`encoder_session` with profiling on, in ``benchmarks/encoder_profile.py``).

    The model is loaded on the first text that misses both caches, so a run on precomputed
    embeddings never loads it.
    """

    dim: int = EMBED_DIM

    def __init__(self, config: EmbedderConfig | None = None, session: Any = None) -> None:
        self.config = config or EmbedderConfig()
        backend = self.config.backend
        if backend.startswith("onnx") and importlib.util.find_spec("onnxruntime") is None:
            log.warning("onnxruntime is not installed; the embedder falls back to torch")
            backend = "torch"
        self.backend = backend
        self._tokenizer = None
        self._cls = self._sep = 0
        self._run: RunFn | None = None
        if session is not None:  # a caller's session of the same model (e.g. profiling)
            self._run = session_runner(session)
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._known: dict[bytes, np.ndarray] = {}

    @property
    def variant(self) -> str:
        """Identifies the numbers this embedder produces (model, backend, truncation)."""
        tail = "ht" if self.config.truncation == "head_tail" else ""
        rev = f".r{ONNX_NUMERICS}" if self.backend.startswith("onnx") else ""
        return f"{MODEL_NAME}/{self.backend}{rev}/L{self.config.max_seq_len}{tail}"

    # ------------------------------------------------------------------ caches
    def preload(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Make ``vectors`` (one row per text) the answer for ``texts`` without a model pass."""
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        for text, v in zip(texts, vecs, strict=True):
            self._known[text_key(text)] = v

    def clear_cache(self) -> None:
        """Forget the LRU cache (not the preloaded vectors); used for cold latency figures."""
        self._lru.clear()

    # ------------------------------------------------------------------ embedding
    def embed(self, texts: Sequence[str], *, use_cache: bool = True) -> np.ndarray:
        """Embed prompts; returns ``(len(texts), 384)`` float32 unit vectors.

        Args:
            texts: Prompt texts (any length; truncated to ``max_seq_len`` tokens).
            use_cache: Consult and fill the LRU cache and the preloaded vectors. ``False``
                always runs the model (cold latency measurements).
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            hit = self._lookup(text) if use_cache else None
            if hit is None:
                todo.setdefault(text, []).append(i)
            else:
                out[i] = hit
        if todo:
            unique = list(todo)
            vecs = self._compute(unique)
            for text, v in zip(unique, vecs, strict=True):
                out[todo[text]] = v
                if use_cache:
                    self._remember(text, v)
        return out

    def embed_one(self, text: str, *, use_cache: bool = True) -> np.ndarray:
        """One prompt's vector, shape ``(384,)``."""
        return self.embed([text], use_cache=use_cache)[0]

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """WordPiece tokens per text after truncation (what the model actually sees)."""
        return np.array([len(ids) for ids in self._encode(list(texts))], dtype=np.int64)

    def _lookup(self, text: str) -> np.ndarray | None:
        v = self._lru.get(text)
        if v is not None:
            self._lru.move_to_end(text)
            return v
        if self._known:
            return self._known.get(text_key(text))
        return None

    def _remember(self, text: str, v: np.ndarray) -> None:
        if self.config.cache_size <= 0:
            return
        self._lru[text] = v
        if len(self._lru) > self.config.cache_size:
            self._lru.popitem(last=False)

    def _compute(self, texts: list[str]) -> np.ndarray:
        run = self._runner()
        encs = self._encode(texts)
        lengths = np.array([len(e) for e in encs])
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for rows in plan_batches(lengths, self.config.batch_size):
            width = int(lengths[rows].max())
            ids = np.zeros((rows.size, width), dtype=np.int64)
            mask = np.zeros((rows.size, width), dtype=np.int64)
            for j, r in enumerate(rows):
                n = lengths[r]
                ids[j, :n] = encs[r]
                mask[j, :n] = 1
            out[rows] = run(ids, mask)
        return out

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """WordPiece ids per text, truncated to ``max_seq_len`` ([CLS] ... [SEP]).

        Tokenising costs about 0.23 microseconds per character, so a 4,000-character prompt
        of which 64 tokens are kept costs more to tokenise (0.9 ms) than its share of the
        model. Only a window at each kept end is tokenised (:meth:`_encode_windows`), which
        gives exactly the tokens of the whole text. ``encode`` one by one stays on this
        thread (``encode_batch`` starts a thread pool that competes with the model's thread).
        """
        return [self._encode_one(t) for t in texts]

    def _encode_one(self, text: str) -> list[int]:
        limit = self.config.max_seq_len
        if self.config.truncation == "head":
            n_head, n_tail = limit - 2, 0
        else:
            tail = max(1, limit // 4)
            n_head, n_tail = limit - tail - 1, tail - 1
        head_chars = WINDOW_CHARS_PER_TOKEN * n_head
        tail_chars = WINDOW_CHARS_PER_TOKEN * n_tail if n_tail else 0
        if len(text) > head_chars + tail_chars:
            ids = self._encode_windows(text, n_head, n_tail, head_chars, tail_chars)
            if ids is not None:
                return ids
        tok = self._tok()
        cut = CHARS_PER_TOKEN_BOUND * limit
        if self.config.truncation == "head":
            return tok.encode(text[:cut]).ids
        ids = tok.encode(text if len(text) <= 2 * cut else f"{text[:cut]} {text[-cut:]}").ids
        return ids if len(ids) <= limit else ids[: n_head + 1] + ids[len(ids) - n_tail - 1 :]

    def _encode_windows(
        self, text: str, n_head: int, n_tail: int, head_chars: int, tail_chars: int
    ) -> list[int] | None:
        """``[CLS]``, the first ``n_head`` and last ``n_tail`` tokens of ``text``, ``[SEP]``,
        tokenising only its first ``head_chars`` and last ``tail_chars`` characters.

        Each window is cut at a space or newline. BERT's normaliser works per character and
        its pre-tokeniser splits at whitespace, so the tokens of a prefix (suffix) ending
        (starting) at whitespace are exactly the leading (trailing) tokens of the whole text.
        ``None`` when a window lacks whitespace, the windows overlap, or a window holds too
        few tokens: the caller then tokenises the text the slow way.
        """
        tok = self._tok()
        head_end = max(text.rfind(" ", 0, head_chars), text.rfind("\n", 0, head_chars))
        if head_end <= 0:
            return None
        head = tok.encode(text[:head_end], add_special_tokens=False).ids
        if len(head) < n_head:
            return None
        ids = [self._cls, *head[:n_head]]
        if n_tail:
            start = len(text) - tail_chars
            found = [i for i in (text.find(" ", start), text.find("\n", start)) if i >= 0]
            if not found or min(found) < head_end:
                return None
            back = tok.encode(text[min(found) :], add_special_tokens=False).ids
            if len(back) < n_tail:
                return None
            ids += back[-n_tail:]
        ids.append(self._sep)
        return ids

    # ------------------------------------------------------------------ backends
    def _tok(self):  # type: ignore[no-untyped-def]  # tokenizers has no stubs
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
            tok.no_padding()  # the file pads every prompt to 128; we pad per batch
            if self.config.truncation == "head":
                tok.enable_truncation(max_length=self.config.max_seq_len)
            else:
                tok.no_truncation()
            self._cls = tok.token_to_id("[CLS]")
            self._sep = tok.token_to_id("[SEP]")
            self._tokenizer = tok
        return self._tokenizer

    def _runner(self) -> RunFn:
        if self._run is None:
            self._run = self._onnx_runner() if self.backend.startswith("onnx") else None
            if self._run is None:
                self.backend = "torch"
                self._run = self._torch_runner()
        return self._run

    def _onnx_runner(self) -> RunFn | None:
        from sagerl.predict.minilm import ensure_onnx

        try:
            path = ensure_onnx(quantized=self.backend == "onnx-int8")
        except Exception as exc:  # export needs torch + onnx; fall back rather than fail
            log.warning("ONNX export failed (%s); the embedder falls back to torch", exc)
            return None
        return session_runner(encoder_session(path, self.config.threads))

    def _torch_runner(self) -> RunFn:
        import torch

        from sagerl.predict.minilm import build_torch_model

        model = build_torch_model()
        threads = self.config.threads

        def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            # NOTE: torch's thread count is process-wide: set it for this pass only, so a
            # training loop sharing the process keeps its own.
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            finally:
                torch.set_num_threads(before)

        return run
