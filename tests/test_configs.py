"""Every shipped run config validates with the loader its command uses, so a renamed option or
a typo in ``configs/`` fails here instead of in a user's first run. (Serve configs: see
``test_live_cli.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sagerl.compare.config import load_compare_config
from sagerl.config import load_run_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in REPO.glob("configs/*.yaml") if not p.stem.startswith("serve-"))


def command_of(path: Path) -> str:
    """Which command reads ``path``, from its top-level sections."""
    keys = set(yaml.safe_load(path.read_text()))
    if "compare" in keys:
        return "compare"
    if "scenario" in keys:
        return "online"
    if "ppo" in keys:
        return "train"
    return "simulate"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path: Path) -> None:
    command = command_of(path)
    if command == "compare":
        cfg = load_compare_config(path)
        assert cfg.compare.policies and cfg.compare.seeds
        assert len({p.name for p in cfg.compare.policies}) == len(cfg.compare.policies)
    elif command == "train":
        train = pytest.importorskip("agents.common.config")
        cfg = train.load_train_config(path)
    elif command == "online":
        online = pytest.importorskip("agents.online.config")
        cfg = online.load_online_config(path)
    else:
        cfg = load_run_config(path)
    assert cfg.name == path.stem  # outputs land in runs/<file name>/


def test_every_config_is_covered() -> None:
    assert {command_of(p) for p in CONFIGS} == {"compare", "train", "online", "simulate"}
