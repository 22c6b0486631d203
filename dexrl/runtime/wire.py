"""What one disaggregated step carries between a sim rank and the learner, beside the image:
the columns of the float32 reply block, and the step's fields packed into them and back. Pure
(no simulator), so the capacity planner counts the bytes the runtime sends."""

from __future__ import annotations

import torch

from dexrl.envs.rewards import REWARD_TERMS

# Per-world episode statistics after the reward terms (the AUX columns of a reply).
AUX = tuple(REWARD_TERMS) + ("success", "done", "episode_return", "episode_length", "episode_success",
                             "physics_overflow")


def reply_columns(vector_widths: dict[str, int]) -> dict[str, slice]:
    """Columns of the float32 block (n, V) a sim replies with: its observation vectors, then the
    step's reward, terminated and truncated (0 or 1: exact in float32), the critic observation
    of each finished episode's last state, and the AUX statistics."""
    widths = {**vector_widths, "reward": 1, "terminated": 1, "truncated": 1,
              "final_critic": vector_widths["critic"], "aux": len(AUX)}
    columns, start = {}, 0
    for key, width in widths.items():
        columns[key] = slice(start, start + width)
        start += width
    return columns


def reply_width(columns: dict[str, slice]) -> int:
    return sum(c.stop - c.start for c in columns.values())


def step_bytes_per_world(image_bytes: int, vector_widths: dict[str, int], action_dim: int) -> int:
    """Bytes one world moves per step: its image, its row of the reply block, its actions
    (float32). Each (sim, world group) adds 12 bytes a step: the command's two header floats
    and the reply's env.step seconds."""
    return image_bytes + 4 * (reply_width(reply_columns(vector_widths)) + action_dim)


def pack_step(block: torch.Tensor, columns: dict[str, slice], reward: torch.Tensor, terminated: torch.Tensor,
              truncated: torch.Tensor, info: dict) -> None:
    """A step's outcome (an env.step's reward (n,), flags (n,) and info) into its columns of
    the reply block (n, V); the observation vectors' columns are the caller's."""
    aux = torch.stack([*(info["reward_terms"][k] for k in REWARD_TERMS), info["success"].float(),
                       info["done"].float(), info["episode_return"], info["episode_length"].float(),
                       info["episode_success"].float(), info["physics_overflow"].float()], dim=-1)  # (n, len(AUX))
    for key, value in (("reward", reward), ("terminated", terminated), ("truncated", truncated),
                       ("final_critic", info["final_critic"]), ("aux", aux)):
        block[:, columns[key]].copy_(value.reshape(block.shape[0], -1))


def unpack_step(fields: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(reward, terminated, truncated, info) as env.step gives them, from the reply's column
    groups (each (N, width)): the inverse of pack_step."""
    aux = fields["aux"]  # (N, len(AUX))
    flag = lambda key: aux[:, AUX.index(key)] > 0.5  # noqa: E731
    info = {"reward_terms": {k: aux[:, j] for j, k in enumerate(REWARD_TERMS)},
            "success": flag("success"), "done": flag("done"),
            "episode_return": aux[:, AUX.index("episode_return")],
            "episode_length": aux[:, AUX.index("episode_length")].long(),
            "episode_success": flag("episode_success"), "physics_overflow": flag("physics_overflow"),
            "final_critic": fields["final_critic"]}
    return fields["reward"][:, 0], fields["terminated"][:, 0] > 0.5, fields["truncated"][:, 0] > 0.5, info
