"""Machinery shared by every agent: config, envs, actors, evaluation, callbacks, checkpoints."""
