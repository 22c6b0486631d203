"""Typed configs for the networks (`ModelConfig`) and the PPO learner (`PPOConfig`).

Defaults are the paper's `teacher-depth` values where the paper states them (Sec. III-A:
CNN 16-32-64-128 with LayerNorm + ReLU, 32-d embedding, 2x1024 LSTM, MLP 512-512-256; a
horizon of 16 steps, given there as an example). The paper gives no PPO hyperparameters:
those (epochs, lr, gamma, lambda, clips, coefficients, seq_length) and the asymmetric critic
follow the rl_games / DextrAH lineage and are marked "(lineage)". Presets live elsewhere.

Every `__post_init__` fails at start-up with one sentence naming the field and the fix,
so a misspelt or impossible option never survives into an hour-long run.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIVATIONS = ("elu", "relu", "tanh")
NET_KINDS = ("mlp", "lstm")
LR_SCHEDULES = ("adaptive", "linear", "fixed")
IMAGE_DTYPES = ("float16", "uint16mm")
IMAGE_STORAGE = ("device", "host")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _positive_ints(name: str, values: tuple[int, ...]) -> None:
    _require(
        len(values) > 0 and all(isinstance(v, int) and v > 0 for v in values),
        f"{name} must be a non-empty tuple of positive ints, got {values!r}.",
    )


@dataclass
class ModelConfig:
    """Network sizes. The policy is: [DepthEncoder] + vectors -> LSTM -> MLP -> Gaussian."""

    # Depth encoder (paper): 4 convs, each Conv -> ReLU -> LayerNorm(C, H, W).
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128)
    encoder_kernels: tuple[int, ...] = (6, 4, 4, 4)
    encoder_strides: tuple[int, ...] = (2, 2, 2, 2)
    embed_dim: int = 32
    # Images encoded at most this many at a time when no gradient is kept (act): inference
    # memory then stops growing with the number of worlds. 0 encodes all at once.
    encoder_chunk: int = 4096
    # Policy trunk. actor_kind 'mlp' drops the LSTM (state teacher / baselines).
    actor_kind: str = "lstm"
    lstm_hidden: int = 1024
    lstm_layers: int = 2
    mlp: tuple[int, ...] = (512, 512, 256)
    activation: str = "elu"
    # Gaussian head: state-independent log-std, initial value (std = exp(init_log_std)).
    init_log_std: float = 0.0
    # Asymmetric critic on its own vector observation (lineage: MLP critic).
    critic_kind: str = "mlp"
    critic_mlp: tuple[int, ...] = (512, 512, 256)
    critic_lstm_hidden: int = 1024
    critic_lstm_layers: int = 1

    def __post_init__(self) -> None:
        for name in ("encoder_channels", "encoder_kernels", "encoder_strides", "mlp", "critic_mlp"):
            _positive_ints(name, tuple(getattr(self, name)))
        n = len(self.encoder_channels)
        _require(
            len(self.encoder_kernels) == n and len(self.encoder_strides) == n,
            "encoder_channels, encoder_kernels and encoder_strides must have the same length, "
            f"got {n}, {len(self.encoder_kernels)}, {len(self.encoder_strides)}.",
        )
        _require(isinstance(self.encoder_chunk, int) and self.encoder_chunk >= 0,
                 f"encoder_chunk must be an int >= 0 (0: no chunking), got {self.encoder_chunk!r}.")
        for name in ("embed_dim", "lstm_hidden", "lstm_layers", "critic_lstm_hidden", "critic_lstm_layers"):
            v = getattr(self, name)
            _require(isinstance(v, int) and v > 0, f"{name} must be a positive int, got {v!r}.")
        _require(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}, got {self.activation!r}.")
        _require(self.actor_kind in NET_KINDS, f"actor_kind must be one of {NET_KINDS}, got {self.actor_kind!r}.")
        _require(self.critic_kind in NET_KINDS, f"critic_kind must be one of {NET_KINDS}, got {self.critic_kind!r}.")
        _require(-10.0 < self.init_log_std < 5.0, f"init_log_std must be in (-10, 5), got {self.init_log_std!r}.")


@dataclass
class PPOConfig:
    """PPO learner settings. `batch_size` is derived (num_steps * num_envs), never set."""

    num_steps: int = 16  # horizon T per iteration (paper, as its example)
    num_epochs: int = 4  # (lineage)
    num_minibatches: int = 4  # env slices per epoch (lineage)
    seq_length: int = 16  # truncated-BPTT chunk; must divide num_steps (lineage)
    lr: float = 1e-4  # (lineage)
    schedule: str = "adaptive"  # 'adaptive' (KL) | 'linear' | 'fixed' (lineage: adaptive)
    desired_kl: float = 0.016  # (lineage)
    lr_min: float = 1e-6
    lr_max: float = 1e-2
    gamma: float = 0.998  # (lineage)
    lam: float = 0.95  # (lineage)
    clip: float = 0.2  # surrogate ratio clip (lineage)
    value_clip: float = 0.2  # clip of V - V_old in normalized units; 0 turns it off (lineage)
    entropy_coef: float = 0.002  # (lineage)
    critic_coef: float = 4.0  # total += 0.5 * critic_coef * value_loss (lineage, rl_games form)
    bounds_coef: float = 1e-4  # penalty on |mean| beyond action_bound (lineage)
    action_bound: float = 1.1  # soft bound for the bounds loss (lineage)
    max_grad_norm: float = 1.0  # 0 turns clipping off (lineage)
    reward_scale: float = 0.01  # rewards are multiplied by this before GAE (lineage)
    normalize_obs: bool = True  # running mean/std on vector observations
    normalize_value: bool = True  # critic predicts normalized returns
    normalize_advantage: bool = True  # zero-mean unit-std advantages over the rollout
    image_dtype: str = "float16"  # storage: 'float16' metres or 'uint16mm' millimetres
    # Where rollout images live: 'device' (the learner's device) or 'host' (CPU memory, pinned
    # when the learner is on CUDA; minibatches are copied in). 'host' takes the images, the
    # bulk of the rollout, off the learner GPU so its worlds are bound by host memory instead.
    image_storage: str = "device"
    # Envs per backward pass inside a minibatch; 0: the whole minibatch at once. Gradients
    # accumulate over the micro-batches (each weighted by its share of the minibatch), so the
    # step is the same up to float rounding while update memory stays a fixed cost.
    microbatch_envs: int = 0
    # The image encoder under bf16 autocast, acting and updating alike (CUDA only). The rest
    # of the network stays float32: the update then re-scores actions as the collection did
    # (PPO's ratio starts at 1), which a bf16 LSTM and heads would not at a small action std.
    bf16: bool = True

    def __post_init__(self) -> None:
        for name in ("num_steps", "num_epochs", "num_minibatches", "seq_length"):
            v = getattr(self, name)
            _require(isinstance(v, int) and v > 0, f"{name} must be a positive int, got {v!r}.")
        _require(
            self.num_steps % self.seq_length == 0,
            f"num_steps ({self.num_steps}) must be a multiple of seq_length ({self.seq_length}); "
            "set seq_length to a divisor of num_steps.",
        )
        _require(self.schedule in LR_SCHEDULES, f"schedule must be one of {LR_SCHEDULES}, got {self.schedule!r}.")
        _require(isinstance(self.microbatch_envs, int) and self.microbatch_envs >= 0,
                 f"microbatch_envs must be an int >= 0 (0: whole minibatches), got {self.microbatch_envs!r}.")
        _require(self.image_storage in IMAGE_STORAGE, f"image_storage must be one of {IMAGE_STORAGE}, got {self.image_storage!r}.")
        _require(self.image_dtype in IMAGE_DTYPES, f"image_dtype must be one of {IMAGE_DTYPES}, got {self.image_dtype!r}.")
        _require(0.0 < self.lr_min <= self.lr <= self.lr_max, f"need 0 < lr_min <= lr <= lr_max, got {self.lr_min}, {self.lr}, {self.lr_max}.")
        _require(self.desired_kl > 0.0, f"desired_kl must be > 0, got {self.desired_kl!r}.")
        _require(0.0 < self.gamma <= 1.0, f"gamma must be in (0, 1], got {self.gamma!r}.")
        _require(0.0 <= self.lam <= 1.0, f"lam must be in [0, 1], got {self.lam!r}.")
        _require(self.clip > 0.0, f"clip must be > 0, got {self.clip!r}.")
        for name in ("value_clip", "entropy_coef", "critic_coef", "bounds_coef", "max_grad_norm"):
            v = getattr(self, name)
            _require(v >= 0.0, f"{name} must be >= 0, got {v!r}.")
        _require(self.action_bound > 0.0, f"action_bound must be > 0, got {self.action_bound!r}.")
        _require(self.reward_scale > 0.0, f"reward_scale must be > 0, got {self.reward_scale!r}.")

    def check_num_envs(self, num_envs: int) -> None:
        """Minibatches are slices of environments, so N must split evenly into them."""
        _require(
            num_envs > 0 and num_envs % self.num_minibatches == 0,
            f"num_envs ({num_envs}) must be a positive multiple of num_minibatches "
            f"({self.num_minibatches}); change one of them.",
        )

    @property
    def num_chunks(self) -> int:
        """Truncated-BPTT chunks per rollout (K = T / seq_length)."""
        return self.num_steps // self.seq_length
