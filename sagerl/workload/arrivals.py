"""Arrival processes: synthetic (Poisson, Gamma, rate schedules) and replayed traces.

Every function returns sorted arrival times in **seconds** (float64) and draws only from the
``np.random.Generator`` it is given, so a seed fixes the result.

Burstiness is set by the coefficient of variation (CV) of the inter-arrival times: CV = 1 is
Poisson, CV > 1 is burstier (as in production traces, e.g. ServeGen's per-window fits), CV < 1 is
more regular, CV = 0 is evenly spaced. Gamma gaps with shape ``k = 1/CV²`` and mean ``1/rate``
have exactly that CV.

Rate schedules use the time-rescaling construction: a unit-rate renewal process in
"operational time" ``u = Λ(t) = ∫ rate`` mapped back through ``Λ⁻¹``. With CV = 1 this is an exact
non-homogeneous Poisson process; with other CVs each segment keeps its CV::

    rate |   ┌──────┐
         |───┘      └──────  (schedule: [(0, 2.0), (60, 5.0), (120, 2.0)])
         +────────────────── t (s)
    u=Λ(t) grows 2/s, then 5/s, then 2/s; events are unit-mean gaps in u.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _gaps(k_cv: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` unit-mean gaps with coefficient of variation ``k_cv`` (0 = all exactly 1)."""
    if k_cv == 0:
        return np.ones(size)
    shape = 1.0 / (k_cv * k_cv)
    return rng.gamma(shape, 1.0 / shape, size)


def _check_rate_cv(rate: float, cv: float, n: int) -> None:
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"arrival rate must be > 0 requests/s, got {rate}")
    if not np.isfinite(cv) or cv < 0:
        raise ValueError(f"arrival CV must be >= 0, got {cv}")
    if n < 0:
        raise ValueError(f"number of arrivals must be >= 0, got {n}")


def poisson(rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` arrival times (s) of a Poisson process of ``rate`` requests/s (first after 0)."""
    return gamma(rate, 1.0, n, rng)


def gamma(rate: float, cv: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` arrival times (s) of a renewal process with Gamma gaps.

    Args:
        rate: Mean arrival rate in requests/s (mean gap ``1/rate`` s).
        cv: Coefficient of variation of the gaps (1 = Poisson, 0 = evenly spaced).
        n: Number of arrivals.
        rng: Source of randomness.
    """
    _check_rate_cv(rate, cv, n)
    return np.cumsum(_gaps(cv, n, rng)) / rate


def _parse_schedule(
    schedule: Sequence[Sequence[float]], cv: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``[(start_s, rate[, cv]), ...]`` into start, rate and CV arrays."""
    if len(schedule) == 0:
        raise ValueError("rate schedule is empty")
    rows = []
    for item in schedule:
        if len(item) not in (2, 3):
            raise ValueError(f"schedule entry {tuple(item)} is not (start_s, rate[, cv])")
        rows.append((float(item[0]), float(item[1]), float(item[2]) if len(item) == 3 else cv))
    start, rate, cvs = (np.array(col) for col in zip(*rows, strict=True))
    if start[0] != 0:
        raise ValueError(f"rate schedule must start at 0 s, got {start[0]}")
    if np.any(np.diff(start) <= 0):
        raise ValueError(f"schedule start times must increase, got {start.tolist()}")
    if np.any(~np.isfinite(rate)) or np.any(rate < 0):
        raise ValueError(f"schedule rates must be >= 0 requests/s, got {rate.tolist()}")
    if np.any(~np.isfinite(cvs)) or np.any(cvs < 0):
        raise ValueError(f"schedule CVs must be >= 0, got {cvs.tolist()}")
    return start, rate, cvs


def piecewise(
    schedule: Sequence[Sequence[float]],
    n: int | None,
    rng: np.random.Generator,
    cv: float = 1.0,
    duration: float | None = None,
) -> np.ndarray:
    """Arrival times (s) under a piecewise-constant rate schedule.

    Args:
        schedule: ``[(start_s, rate), ...]`` (or ``(start_s, rate, cv)`` to give a segment its
            own CV): from ``start_s`` seconds on, the rate is ``rate`` requests/s (0 = pause),
            until the next entry. Starts at 0; the last rate holds to the end.
        n: Stop after this many arrivals (``None``: stop at ``duration``).
        rng: Source of randomness.
        cv: Coefficient of variation of gaps for entries without their own.
        duration: Stop at this time in seconds (``None``: stop after ``n``). With both, the
            first limit reached wins.

    Returns:
        Sorted arrival times in seconds, all below ``duration`` when it is given.
    """
    if n is None and duration is None:
        raise ValueError("piecewise arrivals need n or duration")
    if n is not None and n < 0:
        raise ValueError(f"number of arrivals must be >= 0, got {n}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be > 0 s, got {duration}")
    start, rate, cvs = _parse_schedule(schedule, cv)
    if duration is None and rate[-1] == 0:
        raise ValueError("the schedule ends with rate 0, so n arrivals never come; give duration")

    # Operational time at each segment boundary; the last segment is open-ended (or ends at
    # ``duration``). Segments entirely past ``duration`` get zero length.
    end = np.append(start[1:], np.inf if duration is None else duration)
    end = np.minimum(end, np.inf if duration is None else duration)
    length = np.maximum(end - start, 0.0)
    with np.errstate(invalid="ignore"):
        op_len = np.where(rate > 0, rate * length, 0.0)
    op_start = np.concatenate([[0.0], np.cumsum(op_len)[:-1]])
    op_end = op_start + op_len
    limit = n if n is not None else np.inf

    events: list[np.ndarray] = []
    count = 0
    u = 0.0  # operational time of the last event (or of the start)
    seg = 0
    while count < limit:
        # Segment holding u (skip zero-length ones: pauses or cut by duration).
        while seg < len(rate) and (op_len[seg] == 0 or u >= op_end[seg]):
            seg += 1
        if seg >= len(rate):
            break
        expected = op_end[seg] - u
        want = int(min(limit - count, expected + 4 * np.sqrt(expected + 1) + 16))
        draws = u + np.cumsum(_gaps(cvs[seg], max(want, 1), rng))
        inside = draws[draws < op_end[seg]]
        if len(inside) < len(draws):  # the first draw past the segment is the next event
            inside = draws[: len(inside) + 1]
        events.append(inside)
        count += len(inside)
        u = float(inside[-1])
    if not events:
        return np.zeros(0, dtype=np.float64)
    op = np.concatenate(events)
    op = op[op < op_end[-1]]  # past the end of the schedule (only when duration cuts it)
    if n is not None:
        op = op[:n]
    # Map operational time back to seconds through the segment it falls in.
    positive = np.flatnonzero(op_len > 0)
    which = positive[np.searchsorted(op_start[positive], op, side="right") - 1]
    times = start[which] + (op - op_start[which]) / rate[which]
    if duration is not None:
        times = times[times < duration]
    return times


def from_trace(timestamps: Sequence[float] | np.ndarray) -> np.ndarray:
    """Replay a trace: its timestamps (s, or ``datetime64``) sorted and shifted to start at 0."""
    ts = np.asarray(timestamps)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ns]").astype(np.int64) / 1e9
    ts = np.asarray(ts, dtype=np.float64)
    if ts.size == 0:
        return ts
    if not np.all(np.isfinite(ts)):
        raise ValueError("trace timestamps must be finite numbers of seconds")
    ts = np.sort(ts, kind="stable")
    return ts - ts[0]


def mean_rate(times: np.ndarray) -> float:
    """Mean arrival rate (requests/s) of sorted arrival times: gaps / span."""
    if len(times) < 2 or times[-1] <= times[0]:
        raise ValueError("need at least two distinct arrival times to measure a rate")
    return float((len(times) - 1) / (times[-1] - times[0]))


def rescale(times: np.ndarray, target_rate: float) -> np.ndarray:
    """Stretch or squeeze arrival times (s) so their mean rate is ``target_rate`` requests/s.

    All times are multiplied by one factor, so the shape of the trace (bursts, pauses, the CV of
    the gaps, the diurnal curve) is kept and only the time axis changes.
    """
    if not np.isfinite(target_rate) or target_rate <= 0:
        raise ValueError(f"target rate must be > 0 requests/s, got {target_rate}")
    times = np.asarray(times, dtype=np.float64)
    return times * (mean_rate(times) / target_rate)
