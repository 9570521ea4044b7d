"""Online adaptation: an agent that keeps learning on a shifting stream, guarded by SageSched."""

from agents.online.config import OnlineConfig, load_online_config
from agents.online.guardrail import Guardrail, Switch
from agents.online.learner import OnlineLearner

__all__ = ["Guardrail", "OnlineConfig", "OnlineLearner", "Switch", "load_online_config"]
