"""The router's own record of every request it accepted: router-observed state.

Kept apart from what backends report (:mod:`sagerl.live.scrape`), as production-stack keeps
``request_stats`` apart from ``engine_stats``: the ledger is exact about the requests that went
through this router and knows nothing of other clients; a scrape sees everything but is up to a
scrape interval old. :mod:`sagerl.live.views` combines the two.

Accounting invariant (checked by :meth:`Ledger.check` and the kill-a-backend test)::

    accepted == completed + failed + aborted + in flight

Every accepted request ends in exactly one of ``completed`` (the backend finished it),
``failed`` (every attempt failed, or a backend died mid-stream: the client got an error event)
or ``aborted`` (the client went away). Retries move a request between backends without leaving
the ledger. Single-threaded: only the event loop touches it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sagerl.view import QueueProfile
from sagerl.workload.request import Request

OUTCOMES = ("completed", "failed", "aborted")
"""Final states of an accepted request."""


@dataclass(slots=True, eq=False)
class Flight:
    """One accepted request on its way through the router.

    Attributes:
        request: The request as the policy saw it (``output_tokens`` is 0: unknown live).
        rid: Router-assigned id, echoed in the ``x-sagerl-request-id`` header and the log.
        stream: Whether the client asked for server-sent events.
        prediction: The predicted length distribution, or ``None``.
        rank: Gittins rank of its predicted hybrid cost (token²; 0 without a prediction).
        work: Expected hybrid cost (token²; what it adds to a backend's queue profile).
        accepted_at: ``time.monotonic()`` when the body was accepted, s.
        backend: Index of the backend serving it now (-1 before placement).
        tried: Backends tried, in order (retries append).
        decided_at: When the latest placement decision was taken.
        first_byte_at: When the first response byte came back from the backend (-1: not yet).
        finished_at: When it left the ledger (-1: still in flight).
        output_tokens: Output tokens seen so far (stream chunks, or usage at the end).
        status: ``in_flight`` or one of :data:`OUTCOMES`.
        error: The failure's message for ``failed``.
        decision: What the transition log records about the decision (views, scores).
    """

    request: Request
    rid: str
    stream: bool
    prediction: Any = None
    rank: float = 0.0
    work: float = 0.0
    accepted_at: float = field(default_factory=time.monotonic)
    backend: int = -1
    tried: list[int] = field(default_factory=list)
    decided_at: float = -1.0
    first_byte_at: float = -1.0
    finished_at: float = -1.0
    output_tokens: int = 0
    status: str = "in_flight"
    error: str = ""
    decision: dict[str, Any] | None = None


class Ledger:
    """In-flight requests per backend, with counts the views and ``/metrics`` read.

    Args:
        num_backends: Backends in the registry.

    Per backend it keeps the requests waiting for their first byte (queued or prefilling at
    the server, as far as the router can tell), those streaming (decoding), and an estimate of
    their KV tokens (prompt plus tokens seen), all updated in O(1) per event.
    """

    def __init__(self, num_backends: int) -> None:
        self.num_backends = num_backends
        self.active: dict[int, Flight] = {}
        self.on_backend: list[dict[int, Flight]] = [{} for _ in range(num_backends)]
        self.prefilling = [0] * num_backends
        self.decoding = [0] * num_backends
        self.kv_tokens = [0] * num_backends
        self.version = [0] * num_backends
        self.accepted = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.retries = 0
        self.dispatched = [0] * num_backends
        self._profiles: list[tuple[int, QueueProfile] | None] = [None] * num_backends

    # ------------------------------------------------------------------ transitions
    def accept(self, flight: Flight) -> Flight:
        """Record an accepted request (before placement)."""
        self.accepted += 1
        self.active[flight.request.id] = flight
        return flight

    def assign(self, flight: Flight, backend: int) -> None:
        """Send ``flight`` to ``backend`` (first attempt or a retry)."""
        if flight.backend >= 0:
            self._leave(flight)
            self.retries += 1
        flight.backend = backend
        flight.tried.append(backend)
        flight.first_byte_at = -1.0
        flight.output_tokens = 0
        self.on_backend[backend][flight.request.id] = flight
        self.prefilling[backend] += 1
        self.kv_tokens[backend] += flight.request.prompt_tokens
        self.version[backend] += 1
        self.dispatched[backend] += 1

    def first_byte(self, flight: Flight) -> None:
        """The backend started answering: the request moves from prefilling to decoding."""
        if flight.first_byte_at < 0:
            flight.first_byte_at = time.monotonic()
            b = flight.backend
            self.prefilling[b] -= 1
            self.decoding[b] += 1

    def tokens(self, flight: Flight, count: int) -> None:
        """``count`` more output tokens streamed back."""
        flight.output_tokens += count
        self.kv_tokens[flight.backend] += count

    def finish(self, flight: Flight, status: str, error: str = "") -> None:
        """``flight`` leaves the ledger as ``status`` (one of :data:`OUTCOMES`)."""
        if status not in self.outcomes:
            raise ValueError(f"unknown outcome {status!r}; expected one of {OUTCOMES}")
        if flight.status != "in_flight":
            return  # NOTE: already accounted for (e.g. abort raced with completion)
        if flight.backend >= 0:
            self._leave(flight)
        flight.status = status
        flight.error = error
        flight.finished_at = time.monotonic()
        del self.active[flight.request.id]
        self.outcomes[status] += 1

    def _leave(self, flight: Flight) -> None:
        b = flight.backend
        del self.on_backend[b][flight.request.id]
        if flight.first_byte_at < 0:
            self.prefilling[b] -= 1
        else:
            self.decoding[b] -= 1
        self.kv_tokens[b] -= flight.request.prompt_tokens + flight.output_tokens
        self.version[b] += 1

    # ------------------------------------------------------------------ readers
    def in_flight(self, backend: int) -> int:
        return len(self.on_backend[backend])

    def queue_profile(self, backend: int) -> QueueProfile:
        """Ranks and expected work of the requests on ``backend``, sorted (cached per change).

        NOTE: ranks and work are as predicted at admission; the simulator refreshes a running
        request's rank at bucket boundaries. The router sees tokens stream back but does not
        re-rank, to keep a decision O(R log Q).
        """
        cached = self._profiles[backend]
        v = self.version[backend]
        if cached is not None and cached[0] == v:
            return cached[1]
        profile = QueueProfile.build((f.rank, f.work) for f in self.on_backend[backend].values())
        self._profiles[backend] = (v, profile)
        return profile

    def totals(self) -> dict[str, int]:
        """Counts for ``/metrics`` and the accounting test."""
        return {
            "accepted": self.accepted,
            **self.outcomes,
            "in_flight": len(self.active),
            "retries": self.retries,
        }

    def check(self) -> None:
        """Raise ``AssertionError`` if a request was lost (the accounting invariant)."""
        t = self.totals()
        closed = sum(t[o] for o in OUTCOMES)
        if t["accepted"] != closed + t["in_flight"]:
            raise AssertionError(f"ledger does not balance: {t}")
        per_backend = sum(len(m) for m in self.on_backend)
        unplaced = sum(1 for f in self.active.values() if f.backend < 0)
        if per_backend + unplaced != len(self.active):
            raise AssertionError(
                f"ledger: {per_backend} on backends + {unplaced} unplaced != {len(self.active)}"
            )

    def __iter__(self) -> Iterator[Flight]:
        return iter(list(self.active.values()))
