"""Agents that learn to place requests: PPO with action masking, imitation of SageSched, and the
evaluation every policy goes through.

Layout (one folder per algorithm over a small shared ``common/``)::

    common/      config sections, vectorised envs, actors, evaluation, callbacks, checkpoints
    imitation/   demonstrations, behaviour cloning, DAgger (written on the SB3 policy)
    ppo/         MaskablePPO (sb3-contrib) built from the config; the actor-critic policy whose
                 critic alone reads the environment's privileged features
    pipeline.py  ``python -m sagerl train``: imitation -> PPO -> evaluation, resumable
    evaluate.py  ``python -m sagerl eval``: a saved agent beside the baselines

Importing ``agents`` is cheap; torch and stable-baselines3 are imported by the submodules that
need them.
"""
