"""Networks: depth encoder, LSTM core, trunks, Gaussian math and the actor-critic."""

from dexrl.models.actor_critic import (
    ActorCritic,
    EvalOutput,
    PolicyOutput,
    State,
    recurrent_state_shapes,
)
from dexrl.models.distributions import gaussian_entropy, gaussian_kl, gaussian_log_prob
from dexrl.models.encoders import DepthEncoder, conv_plan
from dexrl.models.recurrent import LSTMCore
from dexrl.models.spec import ObsSpec
from dexrl.models.trunks import FeedForwardTrunk, RecurrentTrunk, mlp

__all__ = [
    "ActorCritic",
    "DepthEncoder",
    "EvalOutput",
    "FeedForwardTrunk",
    "LSTMCore",
    "ObsSpec",
    "PolicyOutput",
    "RecurrentTrunk",
    "State",
    "conv_plan",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "mlp",
    "recurrent_state_shapes",
]
