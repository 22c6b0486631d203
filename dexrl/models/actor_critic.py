"""Actor-critic for end-to-end PPO (paper Fig. 3) and its state-teacher variant.

Policy:  [DepthEncoder(image) -> 32] ++ policy vectors -> trunk (LSTM 2x1024 -> MLP
         512-512-256 ELU, or MLP only) -> Linear -> action mean; state-independent log-std.
Value:   asymmetric critic on the value vectors -> trunk (MLP, or LSTM -> MLP) -> Linear -> V.
State teacher: the same class with `ObsSpec(image_key=None, policy_vectors={'state_teacher': D})`.

Observations are dicts of tensors keyed as the `ObsSpec` says. The model takes RAW
observations and normalizes vector keys itself with `obs_normalizer`, whose statistics
stay frozen while acting and updating (the learner refreshes them once per iteration),
so the log-probabilities recomputed in the update match the collected ones exactly.
The critic predicts *normalized* values; `act` returns them de-normalized (real scale).
Normalizers are injected (see dexrl.rl.build_actor_critic); the defaults are identities.
Precision: only the image encoder may run in bf16 (`encoder_bf16`, CUDA), alike when acting
and updating; everything after the embedding is float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dexrl.config.rl import ModelConfig
from dexrl.models.distributions import gaussian_entropy, gaussian_log_prob
from dexrl.models.encoders import DepthEncoder
from dexrl.models.spec import ObsSpec
from dexrl.models.trunks import build_trunk

State = dict[str, torch.Tensor]  # name -> (layers, B, hidden); empty for feed-forward nets


def recurrent_state_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """Names and (layers, hidden) of the recurrent state the model carries; pure, from config."""
    shapes: dict[str, tuple[int, int]] = {}
    if cfg.actor_kind == "lstm":
        shapes["policy_h"] = shapes["policy_c"] = (cfg.lstm_layers, cfg.lstm_hidden)
    if cfg.critic_kind == "lstm":
        shapes["value_h"] = shapes["value_c"] = (cfg.critic_lstm_layers, cfg.critic_lstm_hidden)
    return shapes


class IdentityObsNormalizer(nn.Module):
    """Stand-in with the ObsNormalizer interface: no statistics, no change."""

    def forward(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return obs

    def update(self, obs: dict[str, torch.Tensor], reduce_fn=None) -> None:
        pass


class IdentityValueNormalizer(nn.Module):
    """Stand-in with the RunningNormalizer interface: no statistics, no change."""

    def update(self, x: torch.Tensor, reduce_fn=None) -> None:
        pass

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class PolicyOutput:
    """One collection step for B envs."""

    action: torch.Tensor  # (B, A) sampled (or the mean when deterministic), unclipped
    log_prob: torch.Tensor  # (B,)
    mean: torch.Tensor  # (B, A)
    std: torch.Tensor  # (B, A)
    value: torch.Tensor | None  # (B,) real scale (de-normalized), None if not asked for
    state: State  # new recurrent state, each (layers, B, hidden)


@dataclass
class EvalOutput:
    """Re-evaluation of stored actions over a (T, B) sequence, float32."""

    log_prob: torch.Tensor  # (T, B)
    entropy: torch.Tensor  # (T, B)
    value: torch.Tensor  # (T, B) NORMALIZED value prediction
    mean: torch.Tensor  # (T, B, A)
    log_std: torch.Tensor  # (T, B, A)


class ActorCritic(nn.Module):
    def __init__(
        self,
        spec: ObsSpec,
        cfg: ModelConfig,
        obs_normalizer: nn.Module | None = None,
        value_normalizer: nn.Module | None = None,
        encoder_bf16: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.cfg = cfg
        self.obs_normalizer = obs_normalizer if obs_normalizer is not None else IdentityObsNormalizer()
        self.value_normalizer = value_normalizer if value_normalizer is not None else IdentityValueNormalizer()
        self.encoder: DepthEncoder | None = None
        in_dim = spec.policy_vector_dim
        if spec.image_key is not None:
            self.encoder = DepthEncoder(spec.image_shape, cfg.encoder_channels, cfg.encoder_kernels, cfg.encoder_strides,
                                        cfg.embed_dim, cfg.encoder_chunk, encoder_bf16)
            in_dim += cfg.embed_dim
        self.policy_trunk = build_trunk(cfg.actor_kind, in_dim, cfg.lstm_hidden, cfg.lstm_layers, cfg.mlp, cfg.activation, "policy")
        self.mean_head = nn.Linear(self.policy_trunk.out_dim, spec.action_dim)
        self.value_trunk = build_trunk(
            cfg.critic_kind, spec.value_vector_dim, cfg.critic_lstm_hidden, cfg.critic_lstm_layers, cfg.critic_mlp, cfg.activation, "value"
        )
        self.value_head = nn.Linear(self.value_trunk.out_dim, 1)
        self.log_std = nn.Parameter(torch.full((spec.action_dim,), float(cfg.init_log_std)))  # (A,)
        # Small initial means keep early actions inside the bounds and the bounds loss quiet.
        nn.init.orthogonal_(self.mean_head.weight, gain=0.01)
        nn.init.zeros_(self.mean_head.bias)

    # ---- recurrent state -------------------------------------------------------------
    def state_shapes(self) -> dict[str, tuple[int, int]]:
        return {**self.policy_trunk.state_shapes(), **self.value_trunk.state_shapes()}

    def initial_state(self, batch: int, device: torch.device | str) -> State:
        return {k: torch.zeros(l, batch, h, device=device) for k, (l, h) in self.state_shapes().items()}  # (L, B, H)

    # ---- sequence forward passes (T, B, ...) -------------------------------------------
    def _policy_features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [obs[key].float() for key in self.spec.policy_vectors]  # (T, B, D_k)
        if self.encoder is not None:
            image = obs[self.spec.image_key]  # (T, B, C, H, W)
            steps, batch = image.shape[:2]
            embed = self.encoder(image.flatten(0, 1))  # (T*B, E)
            parts.append(embed.view(steps, batch, -1))  # (T, B, E)
        return torch.cat(parts, dim=-1)  # (T, B, F_in)

    def _policy_mean(self, obs: dict, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        feats, new_state = self.policy_trunk(self._policy_features(obs), state, reset)  # (T, B, F)
        return self.mean_head(feats).float(), new_state  # (T, B, A)

    def _value_norm(self, obs: dict, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        x = torch.cat([obs[key].float() for key in self.spec.value_vectors], dim=-1)  # (T, B, C)
        feats, new_state = self.value_trunk(x, state, reset)  # (T, B, F)
        return self.value_head(feats).float().squeeze(-1), new_state  # (T, B)

    # ---- public API --------------------------------------------------------------------
    @torch.no_grad()
    def act(
        self,
        obs: dict[str, torch.Tensor],
        state: State,
        reset: torch.Tensor,
        deterministic: bool = False,
        with_value: bool = True,
    ) -> PolicyOutput:
        """One step for B envs. obs values (B, ...) raw; reset (B,) True at an episode's first obs."""
        seq_obs = self.obs_normalizer({k: v.unsqueeze(0) for k, v in obs.items()})  # (1, B, ...)
        seq_reset = reset.bool().unsqueeze(0)  # (1, B)
        mean, new_state = self._policy_mean(seq_obs, state, seq_reset)
        mean = mean[0]  # (B, A)
        log_std = self.log_std.float().expand_as(mean)  # (B, A)
        std = log_std.exp()
        action = mean if deterministic else mean + std * torch.randn_like(mean)  # (B, A)
        value = None
        if with_value:
            value_norm, value_state = self._value_norm(seq_obs, state, seq_reset)
            value = self.value_normalizer.denormalize(value_norm[0])  # (B,)
            new_state.update(value_state)
        return PolicyOutput(action, gaussian_log_prob(action, mean, log_std), mean, std, value, new_state)

    def evaluate(self, obs: dict[str, torch.Tensor], actions: torch.Tensor, state: State, reset: torch.Tensor) -> EvalOutput:
        """Differentiable re-evaluation. obs (T, B, ...) raw, actions (T, B, A), reset (T, B),
        state at the sequence start (layers, B, hidden)."""
        seq_obs = self.obs_normalizer(obs)
        reset = reset.bool()
        mean, _ = self._policy_mean(seq_obs, state, reset)  # (T, B, A)
        value, _ = self._value_norm(seq_obs, state, reset)  # (T, B)
        log_std = self.log_std.float().expand_as(mean)  # (T, B, A)
        return EvalOutput(gaussian_log_prob(actions.float(), mean, log_std), gaussian_entropy(log_std), value, mean, log_std)

    @torch.no_grad()
    def value(self, obs: dict[str, torch.Tensor], state: State, reset: torch.Tensor | None = None) -> torch.Tensor:
        """Real-scale V (B,) of B raw observations continuing from `state`; reset (B,) or None
        (no reset: e.g. the final observation of a truncated episode, for GAE bootstrapping)."""
        seq_obs = self.obs_normalizer({k: v.unsqueeze(0) for k, v in obs.items()})  # (1, B, ...)
        batch = next(iter(obs.values())).shape[0]
        if reset is None:
            reset = torch.zeros(batch, dtype=torch.bool, device=self.log_std.device)
        value_norm, _ = self._value_norm(seq_obs, state, reset.bool().unsqueeze(0))  # (1, B)
        return self.value_normalizer.denormalize(value_norm[0])  # (B,)
