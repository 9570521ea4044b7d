"""The request entity every other module consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Request:
    """One LLM request as the workload produces it, before any scheduling.

    Attributes:
        id: Index of the request within its workload (0..n-1, in arrival order).
        arrival: Arrival time in seconds from the start of the workload.
        prompt_tokens: Prompt length I in tokens.
        output_tokens: True output length O in tokens. Hidden from policies: only the
            simulator (to know when a request ends) and oracle baselines may read it.
        prompt_text: The prompt text where the data set has it, else ``None``.
        source: Name of the data set it came from (e.g. ``"sharegpt"``).
        client: Client or tenant id where known (ServeGen), else ``None``.
        prompt_id: Stable id of the prompt inside its data set (for de-duplication and for
            keeping predictor warm-up pools disjoint from evaluated prompts).
        length_samples: Other sampled output lengths of the same prompt where the data set has
            them (CASTILLO's 10 samples); the true distribution used by the oracle predictor.
    """

    id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    prompt_text: str | None = None
    source: str = ""
    client: str | None = None
    prompt_id: str = ""
    length_samples: tuple[int, ...] = field(default=())
