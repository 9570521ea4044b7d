"""The cluster simulator: replicas, a placement policy, and the event loop.

Events are (time, replica, version) step ends in a heap; arrivals come from the sorted request
list. At equal times arrivals go first, then step ends by replica index, so a request arriving
exactly when an iteration ends is visible to the next iteration (as in a real engine, whose
scheduler runs between iterations). A stale event (its plan was truncated) is skipped by version.

The loop is also exposed in pieces (``advance_to``, ``views``, ``place``, ``drain``) so a
Gymnasium environment can take the placement decision itself. The simulator knows nothing of RL.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from typing import Any, Protocol

from tqdm import tqdm

from sagerl.errors import SagerlError
from sagerl.policy.placement import PlacementPolicy
from sagerl.sim.metrics import SimResult
from sagerl.sim.replica import Replica
from sagerl.sim.sequence import Sequence
from sagerl.view import ReplicaView
from sagerl.workload.request import Request


class Predictor(Protocol):
    """What the simulation needs from a length predictor (see :mod:`sagerl.predict`)."""

    def predict(self, request: Request) -> Any: ...

    def observe(self, request: Request, output_tokens: int) -> None: ...


class LazyViews(Seq[ReplicaView]):
    """A read-only sequence of replica views built on first access.

    Round-robin reads one view per decision; building all N would dominate its cost.
    """

    __slots__ = ("_cache", "_now", "_replicas")

    def __init__(self, replicas: list[Replica], now: float) -> None:
        self._replicas = replicas
        self._now = now
        self._cache: list[ReplicaView | None] = [None] * len(replicas)

    def __len__(self) -> int:
        return len(self._replicas)

    def __getitem__(self, i: int) -> ReplicaView:  # type: ignore[override]
        view = self._cache[i]
        if view is None:
            view = self._cache[i] = self._replicas[i].view(self._now)
        return view


class Simulation:
    """N replicas (possibly different GPUs) behind one placement policy."""

    def __init__(
        self,
        replicas: list[Replica],
        placement: PlacementPolicy | None = None,
        predictor: Predictor | None = None,
    ) -> None:
        """
        Args:
            replicas: The replicas, indexed 0..N-1 (the placement action).
            placement: Placement policy used by :meth:`run`.
            predictor: Optional output-length predictor. Streaming protocol: each request is
                predicted when it arrives (before placement) and observed when it finishes.
        """
        if not replicas:
            raise SagerlError("a cluster needs at least one replica")
        self.replicas = replicas
        self.placement = placement
        self.predictor = predictor
        self.reset()

    def reset(self) -> None:
        """Empty every replica and the event queue."""
        for r in self.replicas:
            r.reset()
        self.now = 0.0
        self._events: list[tuple[float, int, int]] = []
        self._version = [0] * len(self.replicas)
        self.sequences: list[Sequence] = []
        self.rejected: list[Sequence] = []

    # ------------------------------------------------------------ pieces
    def advance_to(self, t: float) -> list[Sequence]:
        """Process every step end strictly before ``t``; returns sequences that finished."""
        finished: list[Sequence] = []
        events = self._events
        while events and events[0][0] < t:
            time, idx, version = heapq.heappop(events)
            if version != self._version[idx]:
                continue
            if time < self.now:
                raise AssertionError(f"time went back: event at {time} after {self.now}")
            self.now = time
            replica = self.replicas[idx]
            done = replica.complete(time)
            if done:
                finished.extend(done)
                if self.predictor is not None:
                    for seq in done:
                        self.predictor.observe(seq.request, seq.num_generated)
            self._schedule(replica, time)
        if t > self.now:
            self.now = t
        return finished

    def drain(self) -> list[Sequence]:
        """Run until every placed request has finished."""
        finished = self.advance_to(float("inf"))
        stuck = [r.index for r in self.replicas if r.has_work]
        if stuck:
            raise AssertionError(f"replicas {stuck} still hold work after the event queue emptied")
        return finished

    def views(self, now: float | None = None) -> LazyViews:
        """Point-in-time snapshot of every replica (each view built on first access)."""
        return LazyViews(self.replicas, self.now if now is None else now)

    def predict(self, request: Request) -> Any:
        """The predictor's length distribution for ``request`` (``None`` without a predictor)."""
        return None if self.predictor is None else self.predictor.predict(request)

    def place(self, request: Request, index: int, prediction: Any = None) -> Sequence:
        """Queue ``request`` on replica ``index`` at the current time."""
        if not 0 <= index < len(self.replicas):
            raise SagerlError(f"replica index {index} out of range 0..{len(self.replicas) - 1}")
        seq = Sequence(request)
        seq.prediction = prediction
        self.sequences.append(seq)
        replica = self.replicas[index]
        if request.prompt_tokens + request.output_tokens > replica.max_tokens:
            seq.replica = index
            self.rejected.append(seq)
            return seq
        replica.add(seq, self.now)
        if replica.idle:
            self._schedule(replica, self.now)
        else:
            new_end = replica.truncate(self.now)
            if new_end is not None:
                self._push(replica.index, new_end)
        return seq

    def _schedule(self, replica: Replica, now: float) -> None:
        end = replica.schedule(now)
        if end is not None:
            self._push(replica.index, end)

    def _push(self, idx: int, end: float) -> None:
        self._version[idx] += 1
        heapq.heappush(self._events, (end, idx, self._version[idx]))

    # -------------------------------------------------------------- whole run
    def run(self, requests: Iterable[Request], *, progress: bool = False) -> SimResult:
        """Simulate ``requests`` (sorted by arrival) with the configured placement policy."""
        if self.placement is None:
            raise SagerlError("Simulation.run needs a placement policy")
        reqs: Seq[Request] = list(requests)
        self.reset()
        self.placement.reset()
        choose = self.placement.choose
        last = -float("inf")
        bar = tqdm(total=len(reqs), desc="simulate", unit="req", disable=not progress)
        for i, req in enumerate(reqs):
            if req.arrival < last:
                raise SagerlError(f"requests are not sorted by arrival (request {req.id})")
            last = req.arrival
            self.advance_to(req.arrival)
            prediction = self.predict(req)
            index = choose(req, self.views(req.arrival), req.arrival, prediction)
            self.place(req, index, prediction)
            if progress and i % 1000 == 999:
                bar.update(1000)
        self.drain()
        bar.update(len(reqs) - bar.n)
        bar.close()
        return SimResult.from_simulation(self)
