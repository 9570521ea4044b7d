"""A parsed data set: requests without arrival times yet.

Loaders (``sagerl.workload.datasets``) turn each file in the data directory into a
:class:`RequestPool`; arrival processes (``sagerl.workload.arrivals``) and
``sagerl.workload.build`` then turn pools into a list of :class:`~sagerl.workload.request.Request`.
Columns are numpy arrays so pools cache to disk cheaply and sample fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RequestPool:
    """Requests of one data set, column-wise, before arrival times are assigned.

    Attributes:
        source: Data set name (e.g. ``"castillo"``, ``"azure_conv"``).
        prompt_tokens: Prompt length per row (int64).
        output_tokens: One true output length per row (int64). For data sets with several
            sampled lengths per prompt this is the first sample; builders draw from
            ``output_samples`` with the run's seed instead.
        output_samples: ``(n, k)`` int64 sampled output lengths per row (CASTILLO: k=10), or
            ``None``.
        texts: Prompt text per row, or ``None`` for length-only traces.
        prompt_ids: Stable prompt id per row (str), unique per prompt within the data set.
        clients: Client id per row, or ``None``.
        timestamps: Arrival time in seconds from the trace start per row, or ``None`` when the
            data set has no timestamps.
        groups: Sub-data-set per row (e.g. CASTILLO's ``dataset`` column), or ``None``.
    """

    source: str
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    output_samples: np.ndarray | None = None
    texts: list[str] | None = None
    prompt_ids: list[str] | None = None
    clients: list[str] | None = None
    timestamps: np.ndarray | None = None
    groups: list[str] | None = None

    def __len__(self) -> int:
        return int(self.prompt_tokens.shape[0])

    def take(self, index: np.ndarray) -> RequestPool:
        """Rows ``index`` (an int array) as a new pool, every column kept aligned."""
        idx = np.asarray(index, dtype=np.int64)

        def pick(col: list[str] | None) -> list[str] | None:
            return None if col is None else [col[i] for i in idx]

        return RequestPool(
            source=self.source,
            prompt_tokens=self.prompt_tokens[idx],
            output_tokens=self.output_tokens[idx],
            output_samples=None if self.output_samples is None else self.output_samples[idx],
            texts=pick(self.texts),
            prompt_ids=pick(self.prompt_ids),
            clients=pick(self.clients),
            timestamps=None if self.timestamps is None else self.timestamps[idx],
            groups=pick(self.groups),
        )
