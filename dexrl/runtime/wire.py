"""What one disaggregated step carries between a sim rank and the learner, beside the image:
the columns of the float32 reply block. Pure (no simulator), so the capacity planner counts
the bytes the runtime sends."""

from __future__ import annotations

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
    (float32). A group's command header and its env.step seconds add 12 bytes per message."""
    return image_bytes + 4 * (reply_width(reply_columns(vector_widths)) + action_dim)
