"""Small trained heads on the prompt embedding: the ``point`` and ``tie`` baselines.

Both are one-hidden-layer MLPs on ``[embedding, standardised log(1 + prompt tokens)]`` trained on
the warm-up pool, with the target ``z = log(1 + output tokens)`` (lengths span four orders of
magnitude, so errors are relative):

* ``point`` (SSJF-style regression): one output, trained with the L1 loss, i.e. the conditional
  median of ``z``; the median minimises the CRPS of a point forecast.
* ``tie`` (TIE, arXiv 2604.00499): two outputs, the location ``mu`` and scale ``sigma`` of a
  Student-t with ``nu`` degrees of freedom on ``z`` (a log-t on lengths, heavy-tailed), trained by
  maximum likelihood.

Every sampled length of a prompt (CASTILLO has 10) enters the loss. Training is seeded and
deterministic, keeps the checkpoint with the best loss on a held-out share of the pool, and is
cached under ``cache_dir()/heads/`` keyed by the inputs and the config. Inference is plain numpy
(two matrix products), so predicting needs no torch.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sagerl import paths
from sagerl.predict.config import TrainConfig

log = logging.getLogger(__name__)

HeadKind = Literal["point", "tie"]
CACHE_VERSION = 2


@dataclass
class MLPHead:
    """Numpy weights of a trained head (``x -> W2 relu(W1 x + b1) + b2``)."""

    kind: str
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    pt_mean: float
    pt_std: float

    def forward(self, embeddings: np.ndarray, prompt_tokens: np.ndarray) -> np.ndarray:
        """Raw outputs, ``(n, 1)`` for ``point`` (median of z) or ``(n, 2)`` for ``tie``
        (``mu``, and ``sigma`` already made positive)."""
        x = _features(embeddings, prompt_tokens, self.pt_mean, self.pt_std)
        # NOTE: einsum, not ``@``: numpy's BLAS would hand a 16-row batch to a second thread,
        # and the predictor's latency is defined on one thread (einsum costs ~5 us a row).
        h = np.maximum(np.einsum("ij,jk->ik", x, self.w1) + self.b1, 0.0)
        out = np.einsum("ij,jk->ik", h, self.w2) + self.b2
        if self.kind == "tie":
            out = out.copy()
            out[:, 1] = _softplus(out[:, 1]) + 1e-3
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            kind=self.kind,
            w1=self.w1,
            b1=self.b1,
            w2=self.w2,
            b2=self.b2,
            pt=np.array([self.pt_mean, self.pt_std]),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> MLPHead:
        with np.load(path) as z:
            return cls(
                str(z["kind"]),
                z["w1"],
                z["b1"],
                z["w2"],
                z["b2"],
                float(z["pt"][0]),
                float(z["pt"][1]),
            )


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _features(
    embeddings: np.ndarray, prompt_tokens: np.ndarray, mean: float, std: float
) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float32).reshape(-1, embeddings.shape[-1])
    pt = (np.log1p(np.asarray(prompt_tokens, dtype=np.float32)) - mean) / std
    return np.concatenate([e, pt.reshape(-1, 1).astype(np.float32)], axis=1)


def train_head(
    kind: HeadKind,
    embeddings: np.ndarray,
    prompt_tokens: np.ndarray,
    samples: np.ndarray,
    config: TrainConfig,
    *,
    use_cache: bool = True,
) -> MLPHead:
    """Train (or load from the cache) a head on ``(n, d)`` embeddings and ``(n, k)`` lengths."""
    samples = np.asarray(samples, dtype=np.float64).reshape(len(embeddings), -1)
    key = _cache_key(kind, embeddings, prompt_tokens, samples, config)
    path = paths.cache_dir() / "heads" / f"{kind}-{key}.npz"
    if use_cache and path.is_file():
        try:
            return MLPHead.load(path)
        except Exception as exc:  # a damaged cache file is rebuilt, not fatal
            log.warning("ignoring unreadable head cache %s (%s)", path, exc)
    head = _fit(kind, embeddings, prompt_tokens, samples, config)
    if use_cache:
        try:
            head.save(path)
        except OSError as exc:
            log.warning("cannot cache head at %s (%s)", path, exc)
    return head


def _cache_key(
    kind: str, emb: np.ndarray, pt: np.ndarray, samples: np.ndarray, config: TrainConfig
) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_VERSION}:{kind}:{config.model_dump_json()}".encode())
    for arr in (emb, pt, samples):
        a = np.ascontiguousarray(arr)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:20]


def _fit(
    kind: HeadKind,
    embeddings: np.ndarray,
    prompt_tokens: np.ndarray,
    samples: np.ndarray,
    cfg: TrainConfig,
) -> MLPHead:
    import torch

    # NOTE: one thread. The net is tiny (a 256 x 385 batch), so more threads only add
    # synchronisation (50x slower on a busy 2-core machine), and the result then does not
    # depend on the machine's core count. The process-wide setting is restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_one_thread(kind, embeddings, prompt_tokens, samples, cfg)
    finally:
        torch.set_num_threads(before)


def _fit_one_thread(
    kind: HeadKind,
    embeddings: np.ndarray,
    prompt_tokens: np.ndarray,
    samples: np.ndarray,
    cfg: TrainConfig,
) -> MLPHead:
    import torch

    n = len(embeddings)
    if n < 2:
        raise ValueError(f"training the {kind} head needs at least 2 warm-up prompts, got {n}")
    logpt = np.log1p(np.asarray(prompt_tokens, dtype=np.float64))
    pt_mean, pt_std = float(logpt.mean()), float(logpt.std() or 1.0)
    x_all = torch.from_numpy(_features(embeddings, prompt_tokens, pt_mean, pt_std))
    z_all = torch.from_numpy(np.log1p(np.maximum(samples, 0.0)).astype(np.float32))

    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    n_val = round(n * cfg.val_fraction) if n >= 10 else 0
    val, tr = order[:n_val], order[n_val:]

    gen = torch.Generator().manual_seed(cfg.seed)
    d_in, n_out = x_all.shape[1], 1 if kind == "point" else 2
    first, last = torch.nn.Linear(d_in, cfg.hidden), torch.nn.Linear(cfg.hidden, n_out)
    net = torch.nn.Sequential(first, torch.nn.ReLU(), last)
    with torch.no_grad():  # seeded init, independent of the global torch RNG
        for m in (first, last):
            bound = 1.0 / np.sqrt(m.in_features)
            m.weight.uniform_(-bound, bound, generator=gen)
            m.bias.zero_()
        last.bias[0] = float(z_all[tr].median())  # start at the pooled median
        if kind == "tie":
            last.bias[1] = float(np.log(np.expm1(max(float(z_all[tr].std()), 0.1))))

    nu = cfg.nu

    def loss_fn(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if kind == "point":
            return (z - out[:, :1]).abs().mean()
        mu = out[:, :1]
        sigma = torch.nn.functional.softplus(out[:, 1:2]) + 1e-3
        t = (z - mu) / sigma
        return (torch.log(sigma) + 0.5 * (nu + 1.0) * torch.log1p(t * t / nu)).mean()

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = (float("inf"), [p.detach().clone() for p in net.parameters()])
    tr_t = torch.from_numpy(tr)
    val_t = torch.from_numpy(val)
    check_every = max(1, cfg.steps // 40)
    for step in range(cfg.steps):
        pick = tr_t[torch.randint(len(tr_t), (min(cfg.batch_size, len(tr_t)),), generator=gen)]
        loss = loss_fn(net(x_all[pick]), z_all[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % check_every == 0 or step + 1 == cfg.steps:
            with torch.no_grad():
                rows = val_t if len(val_t) else tr_t
                v = float(loss_fn(net(x_all[rows]), z_all[rows]))
            if v < best[0]:
                best = (v, [p.detach().clone() for p in net.parameters()])
    w1, b1, w2, b2 = (p.numpy() for p in best[1])
    log.info("trained %s head: best held-out loss %.4f", kind, best[0])
    return MLPHead(kind, w1.T.copy(), b1.copy(), w2.T.copy(), b2.copy(), pt_mean, pt_std)
