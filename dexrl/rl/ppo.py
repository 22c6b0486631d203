"""PPO: pure loss terms and learning-rate rules, plus the `PPO` updater.

Loss (rl_games form, so `critic_coef = 4` means what it means in the paper's lineage):
    ratio   = exp(log_prob - old_log_prob)
    policy  = mean(max(-A * ratio, -A * clamp(ratio, 1 - clip, 1 + clip)))
    value   = mean(max((V - R)^2, (V_old + clamp(V - V_old, -vc, vc) - R)^2))   (normalized units)
    entropy = mean(H)
    bounds  = mean(sum_a relu(mu_a - b)^2 + relu(-b - mu_a)^2)
    total   = policy + 0.5 * critic_coef * value - entropy_coef * entropy + bounds_coef * bounds
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dexrl.config.rl import PPOConfig
from dexrl.models.actor_critic import ActorCritic
from dexrl.models.distributions import gaussian_kl
from dexrl.rl.gae import compute_gae
from dexrl.rl.normalizer import ReduceFn, batch_moments
from dexrl.rl.storage import Minibatch, RolloutStorage


# ---- pure functions ------------------------------------------------------------------
def surrogate_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate (to minimise) and the fraction of samples whose ratio left [1-clip, 1+clip]."""
    ratio = torch.exp(log_prob - old_log_prob)  # (...)
    loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)).mean()
    clip_fraction = ((ratio - 1.0).abs() > clip).float().mean()
    return loss, clip_fraction


def normalize_advantages(adv: torch.Tensor, reduce_fn: ReduceFn | None = None) -> torch.Tensor:
    """Zero mean, unit (unbiased) std over the rollout; with reduce_fn over every rank's
    rollout, so that data-parallel ranks scale their advantages as one process holding all the
    worlds would (each rank's own statistics would weigh the same sample differently)."""
    count, mean, m2 = batch_moments(adv, ())
    if reduce_fn is not None:
        count, mean, m2 = reduce_fn(count, mean, m2)
    std = (m2 / (count - 1.0).clamp_min(1.0)).sqrt()
    return ((adv - mean) / (std + 1e-8)).to(adv.dtype)


def value_loss(value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip: float) -> torch.Tensor:
    """Squared error, pessimistically clipped around the collection-time value when clip > 0."""
    unclipped = (value - returns).square()
    if clip <= 0.0:
        return unclipped.mean()
    clipped = old_value + (value - old_value).clamp(-clip, clip)
    return torch.max(unclipped, (clipped - returns).square()).mean()


def bounds_loss(mean: torch.Tensor, bound: float) -> torch.Tensor:
    """Quadratic penalty on action means outside [-bound, bound], summed over actions."""
    high = (mean - bound).clamp_min(0.0).square()
    low = (-bound - mean).clamp_min(0.0).square()
    return (high + low).sum(dim=-1).mean()


def ppo_losses(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    mean: torch.Tensor,
    cfg: PPOConfig,
) -> dict[str, torch.Tensor]:
    """All terms by name; values, old values and returns in the critic's (normalized) units."""
    policy, clip_fraction = surrogate_loss(log_prob, old_log_prob, advantages, cfg.clip)
    terms = {
        "policy": policy,
        "value": value_loss(value, old_value, returns, cfg.value_clip),
        "entropy": entropy.mean(),
        "bounds": bounds_loss(mean, cfg.action_bound),
    }
    terms["total"] = (
        terms["policy"] + 0.5 * cfg.critic_coef * terms["value"]
        - cfg.entropy_coef * terms["entropy"] + cfg.bounds_coef * terms["bounds"]
    )
    terms["clip_fraction"] = clip_fraction
    return terms


def adaptive_lr(lr: float, kl: float, cfg: PPOConfig) -> float:
    """rl_games / rsl_rl rule: kl > 2 d -> lr / 1.5; kl < d / 2 -> lr * 1.5; clamped to [lr_min, lr_max]."""
    if kl > 2.0 * cfg.desired_kl:
        lr = lr / 1.5
    elif kl < 0.5 * cfg.desired_kl:
        lr = lr * 1.5
    return min(max(lr, cfg.lr_min), cfg.lr_max)


def linear_lr(cfg: PPOConfig, iteration: int, max_iterations: int) -> float:
    """lr * (1 - iteration / max_iterations), never below lr_min."""
    return max(cfg.lr * (1.0 - iteration / max_iterations), cfg.lr_min)


# ---- the updater ---------------------------------------------------------------------
@dataclass
class DistributedHooks:
    """Optional callbacks a data-parallel runtime supplies; this package never imports
    torch.distributed. grads: average .grad of the parameters across ranks in place;
    mean: average a scalar tensor across ranks; moments: see normalizer.ReduceFn."""

    grads: Callable[[list[nn.Parameter]], None] | None = None
    mean: Callable[[torch.Tensor], torch.Tensor] | None = None
    moments: ReduceFn | None = None


class PPO:
    """Owns the optimizer, the learning-rate schedule and the update loop for one model."""

    def __init__(
        self,
        model: ActorCritic,
        cfg: PPOConfig,
        device: torch.device | str,
        max_iterations: int | None = None,
        seed: int = 0,
        hooks: DistributedHooks | None = None,
    ) -> None:
        if cfg.schedule == "linear" and not max_iterations:
            raise ValueError("schedule 'linear' needs max_iterations > 0; pass it to PPO(...) or use 'adaptive'.")
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self.max_iterations = max_iterations
        self.hooks = hooks or DistributedHooks()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.lr = cfg.lr
        self.iteration = 0
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order; CPU so resume is exact

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "lr": self.lr, "iteration": self.iteration,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr, self.iteration = state["lr"], state["iteration"]
        self.generator.set_state(state["generator"])
        self._set_lr(self.lr)

    def _set_lr(self, lr: float) -> None:
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def compute_returns(self, storage: RolloutStorage) -> None:
        """GAE into storage.advantages / returns, value-normalizer refresh, advantage normalization."""
        cfg = self.cfg
        adv, ret = compute_gae(
            storage.rewards * cfg.reward_scale, storage.values, storage.terminated, storage.truncated,
            storage.last_values, cfg.gamma, cfg.lam, storage.truncated_values,
        )  # (T, N) each
        storage.returns.copy_(ret)
        self.model.value_normalizer.update(ret, self.hooks.moments)
        if cfg.normalize_advantage:
            adv = normalize_advantages(adv, self.hooks.moments)
        storage.advantages.copy_(adv)

    def _step(self, storage: RolloutStorage, env_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """One gradient step on the minibatch of env columns env_ids (n,), backward in
        micro-batches of cfg.microbatch_envs: every loss is a mean over equally sized samples,
        so weighting each micro-batch's loss by its share n_i / n sums to the minibatch's loss.
        Returns detached metric tensors."""
        cfg = self.cfg
        micro = cfg.microbatch_envs or len(env_ids)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for ids in env_ids.split(micro):
            weight = len(ids) / len(env_ids)
            terms = self._losses(storage.gather(ids))
            (terms["total"] * weight).backward()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + weight * value.detach()
        kl = sums.pop("kl")
        if self.hooks.mean is not None:
            kl = self.hooks.mean(kl)
        if cfg.schedule == "adaptive":
            self._set_lr(adaptive_lr(self.lr, float(kl), cfg))
        if self.hooks.grads is not None:
            self.hooks.grads(self.params)
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        metrics = {f"loss/{k}": v for k, v in sums.items() if k != "clip_fraction"}
        metrics.update({"ppo/kl": kl, "ppo/clip_fraction": sums["clip_fraction"], "ppo/grad_norm": grad_norm})
        return metrics

    def _losses(self, mb: Minibatch) -> dict[str, torch.Tensor]:
        """Loss terms (ppo_losses) of one (micro-)batch, plus its detached KL to the collection policy."""
        model = self.model
        ev = model.evaluate(mb.obs, mb.actions, mb.states, mb.resets)
        vn = model.value_normalizer
        terms = ppo_losses(
            ev.log_prob, mb.log_probs, mb.advantages, ev.value, vn.normalize(mb.values), vn.normalize(mb.returns),
            ev.entropy, ev.mean, self.cfg,
        )
        with torch.no_grad():
            terms["kl"] = gaussian_kl(mb.action_mean, mb.action_std.log(), ev.mean, ev.log_std).mean()
        return terms

    @torch.no_grad()
    def rebase_kl(self, storage: RolloutStorage) -> None:
        """Make the update's KL (which drives the adaptive learning rate) measure the change
        from the parameters as they are now, not from the policy that collected the rollout:
        the storage's action means and stds := the current model's, one micro-batch of envs
        at a time. For a rollout collected a few updates ago (overlap_update), which would
        otherwise count those updates' drift against this one. The ratio keeps the collection
        log-probabilities, so the importance weights stay right."""
        storage.wait_for_copies()
        ids = torch.arange(storage.num_envs, device=storage.device)
        for part in ids.split(self.cfg.microbatch_envs or storage.num_envs):
            mb = storage.gather(part)
            ev = self.model.evaluate(mb.obs, mb.actions, mb.states, mb.resets)
            storage.action_mean[:, part] = storage.unchunk(ev.mean.float())  # (T, n, A)
            storage.action_std[:, part] = storage.unchunk(ev.log_std.float().exp())

    def update(self, storage: RolloutStorage) -> dict[str, float]:
        """Returns, then num_epochs x num_minibatches steps, then the obs-normalizer refresh."""
        start = time.perf_counter()
        if self.cfg.schedule == "linear":
            self._set_lr(linear_lr(self.cfg, self.iteration, self.max_iterations))
        self.model.train()
        self.compute_returns(storage)
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for _ in range(self.cfg.num_epochs):
            for env_ids in storage.minibatch_env_ids(self.cfg.num_minibatches, self.generator):
                for key, value in self._step(storage, env_ids).items():
                    sums[key] = sums.get(key, 0.0) + value.float()
                steps += 1
        # Obs statistics move only here, after the update, so acting and re-evaluation used
        # the same frozen statistics (ratio == 1 on the first minibatch).
        vectors = {k: v for k, v in storage.obs.items() if k != storage.spec.image_key}
        self.model.obs_normalizer.update(vectors, self.hooks.moments)
        self.iteration += 1
        means = {key: total / steps for key, total in sums.items()}
        means["ppo/returns_mean"] = storage.returns.mean()
        if self.hooks.mean is not None:  # data parallel: every rank's minibatches, in one all-reduce
            keys = list(means)
            means = dict(zip(keys, self.hooks.mean(torch.stack([means[k] for k in keys])).unbind()))
        metrics = {key: float(value) for key, value in means.items()}  # one host sync per key
        metrics.update({
            "ppo/lr": self.lr,
            "ppo/action_std": float(self.model.log_std.detach().exp().mean()),
            "time/update_s": time.perf_counter() - start,
        })
        return metrics
