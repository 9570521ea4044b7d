"""Imitation of the analytic teacher (SageSched placement) on the SB3 policy itself.

* :mod:`~agents.imitation.demos`: record episodes, every state labelled with the teacher's action;
* :mod:`~agents.imitation.bc`: behaviour cloning (masked cross-entropy, plus the critic fitted to
  the returns seen);
* :mod:`~agents.imitation.dagger`: DAgger rounds (roll out the learner, label with the teacher,
  aggregate, clone again).

Written directly on the SB3 policy because the ``imitation`` package (1.0.1) pins
stable-baselines3 2.2 and gymnasium 0.29 and breaks sb3-contrib. The cloned policy is the PPO
policy, so fine-tuning continues from exactly these weights.
"""

from agents.imitation.bc import agreement, clone
from agents.imitation.dagger import dagger_round
from agents.imitation.demos import Demonstrations, record

__all__ = ["Demonstrations", "agreement", "clone", "dagger_round", "record"]
