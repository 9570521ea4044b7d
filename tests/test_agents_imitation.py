"""Imitation of the teacher on the SB3 policy: cloning agreement, DAgger, label smoothing."""

from __future__ import annotations

import numpy as np
import pytest
from test_env_placement import hand_built_env, tiny_env

from agents.common.config import PPOConfig
from agents.imitation import agreement, clone, dagger_round, record
from agents.imitation.demos import Demonstrations, discounted
from agents.ppo import build_model


def fresh_policy(env, seed: int = 0):  # type: ignore[no-untyped-def]
    from stable_baselines3.common.vec_env import DummyVecEnv

    actor = env.actor_size if env.critic is not None else None
    model = build_model(
        PPOConfig(n_steps=64, batch_size=64), DummyVecEnv([lambda: env]), seed, actor
    )
    return model.policy


def test_discounted_returns() -> None:
    np.testing.assert_allclose(discounted([1.0, 1.0, 1.0], 0.5), [1.75, 1.5, 1.0])


def test_cloning_least_outstanding_without_teacher_hints() -> None:
    """The student sees only the cluster (no teacher features) and still learns the rule."""
    env = hand_built_env(120, teacher_features=False, critic_features=False)
    demos = record(env, None, seeds=range(8), gamma=0.99)
    assert len(demos) == 8 * 120
    policy = fresh_policy(env)
    before = agreement(policy, demos)
    figures = clone(
        policy, demos, epochs=60, batch_size=64, learning_rate=3e-3, value_coef=0.0, seed=0
    )
    held_out = record(env, None, seeds=range(100, 102), gamma=0.99)
    assert figures["agreement"] >= 0.9 > before
    assert agreement(policy, held_out) >= 0.85


def test_cloning_sagesched_reaches_full_agreement_and_keeps_entropy() -> None:
    env = tiny_env()
    demos = record(env, None, seeds=range(4), gamma=0.99)
    policy = fresh_policy(env)
    figures = clone(
        policy,
        demos,
        epochs=15,
        batch_size=64,
        learning_rate=1e-3,
        value_coef=0.5,
        label_smoothing=0.2,
    )
    assert figures["agreement"] >= 0.99
    # Smoothing keeps the clone stochastic enough for PPO to explore (3 valid actions here).
    assert 0.3 < figures["entropy"] < 0.8


def test_dagger_round_aggregates_and_labels_learner_states() -> None:
    env = tiny_env()
    demos = record(env, None, seeds=[0, 1], gamma=0.99)
    policy = fresh_policy(env)
    clone(policy, demos, epochs=2, batch_size=64, learning_rate=1e-3, value_coef=0.5)
    bigger, figures = dagger_round(
        policy,
        env,
        demos,
        round_index=1,
        seeds=[5, 6],
        beta=0.0,
        gamma=0.99,
        epochs=5,
        batch_size=64,
        learning_rate=1e-3,
        value_coef=0.5,
    )
    assert len(bigger) == len(demos) + 2 * env.episode_requests
    assert 0.0 <= figures["on_policy_agreement"] <= 1.0
    assert figures["agreement"] >= 0.95


def test_demonstrations_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = hand_built_env(20)
    demos = record(env, None, seeds=[0], gamma=0.9)
    demos.save(tmp_path / "d.npz")
    again = Demonstrations.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(again.obs, demos.obs)
    np.testing.assert_array_equal(again.actions, demos.actions)
    assert (demos + demos).obs.shape[0] == 2 * len(demos)


def test_actor_ignores_critic_only_features() -> None:
    import torch

    env = tiny_env()
    policy = fresh_policy(env)
    obs, _ = env.reset(seed=0)
    mask = env.action_masks()[None]
    a = torch.as_tensor(obs[None])
    b = a.clone()
    b[0, env.actor_size :] += 3.0
    pa = policy.get_distribution(a, action_masks=mask).distribution.probs
    pb = policy.get_distribution(b, action_masks=mask).distribution.probs
    assert torch.allclose(pa, pb)
    assert not torch.allclose(policy.predict_values(a), policy.predict_values(b))


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_label_smoothing_target(smoothing: float) -> None:
    env = hand_built_env(40)
    demos = record(env, None, seeds=[0], gamma=0.99)
    policy = fresh_policy(env)
    figures = clone(
        policy,
        demos,
        epochs=40,
        batch_size=64,
        learning_rate=3e-3,
        value_coef=0.0,
        label_smoothing=smoothing,
    )
    assert figures["agreement"] >= 0.95
    if smoothing == 0.0:
        assert figures["entropy"] < 0.3


def test_deployable_actor_matches_the_policy_on_encoder_features() -> None:
    import torch

    from agents.ppo.policies import deployable_actor

    env = tiny_env()
    policy = fresh_policy(env)
    obs, _ = env.reset(seed=0)
    mask = env.action_masks()
    actor = deployable_actor(policy, env.actor_size)
    with torch.no_grad():
        logits = actor(torch.as_tensor(obs[None, : env.actor_size]))[0]
        probs = policy.get_distribution(torch.as_tensor(obs[None]), action_masks=mask[None])
    expected = probs.distribution.probs[0]
    got = torch.softmax(logits.masked_fill(~torch.as_tensor(mask), -1e8), dim=0)
    assert torch.allclose(got, expected, atol=1e-6)
