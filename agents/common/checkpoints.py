"""Checkpoints of a training run and the state that lets ``--resume`` continue it.

A run directory holds ``checkpoints/`` with SB3 model archives and ``state.json``: which phase
the pipeline reached (imitation rounds done, PPO steps done) and which archive to load. Writes
are atomic (temporary file, then rename), so a Ctrl-C during a save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


@dataclass
class RunState:
    """Progress of a training run.

    Attributes:
        phase: ``imitation`` (cloning and DAgger rounds), ``ppo``, or ``done``.
        bc_done: Behaviour cloning finished (its model is ``checkpoints/imitation.zip``).
        dagger_rounds: DAgger rounds completed.
        num_timesteps: PPO environment steps completed (as the model counts them).
        checkpoint: The archive to resume from, relative to the run directory.
        events: What happened when (phase ends, interruptions), for the record.
    """

    phase: str = "imitation"
    bc_done: bool = False
    dagger_rounds: int = 0
    num_timesteps: int = 0
    checkpoint: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def save(self, run_dir: str | Path) -> None:
        path = Path(run_dir) / "checkpoints" / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunState | None:
        path = Path(run_dir) / "checkpoints" / STATE_FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


class Checkpointer:
    """Saves SB3 models into ``run_dir/checkpoints`` and keeps the run state in step.

    Args:
        run_dir: The run directory.
        keep: PPO checkpoints kept (older ``ppo_<steps>.zip`` files are deleted).
    """

    def __init__(self, run_dir: str | Path, keep: int = 3) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.keep = keep

    def save(self, model: Any, state: RunState, name: str, event: str | None = None) -> Path:
        """Save ``model`` as ``<name>.zip``, point the state at it, write the state."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{name}.zip"
        tmp = self.dir / f".{name}.tmp{os.getpid()}.zip"
        model.save(str(tmp))
        tmp.replace(path)
        state.checkpoint = str(path.relative_to(self.run_dir))
        state.num_timesteps = int(model.num_timesteps) if state.phase != "imitation" else 0
        if event:
            state.events.append({"event": event, "num_timesteps": state.num_timesteps})
        state.save(self.run_dir)
        self._prune()
        return path

    def _prune(self) -> None:
        ppo = sorted(self.dir.glob("ppo_*.zip"), key=lambda p: int(p.stem.split("_")[1]))
        for old in ppo[: -self.keep] if self.keep > 0 else []:
            old.unlink(missing_ok=True)

    def path(self, state: RunState) -> Path | None:
        """The archive ``state`` points at, if it exists."""
        if state.checkpoint is None:
            return None
        p = self.run_dir / state.checkpoint
        return p if p.is_file() else None


def saved_checkpoint(run_dir: str | Path) -> Path | None:
    """The archive a run's ``state.json`` points at, if the run has one and it exists.

    Raises:
        OSError, ValueError, TypeError: ``state.json`` exists but cannot be read.
    """
    state = RunState.load(run_dir)
    return None if state is None else Checkpointer(run_dir).path(state)
