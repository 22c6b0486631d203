"""The observation contract between an environment and the networks / rollout storage.

An `ObsSpec` names the observation keys and their sizes; the env builds one, the model and
the storage read it. Key names are data, never strings buried in the networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ObsSpec:
    """Shapes of what the policy and the value networks consume.

    action_dim:      A, size of the action vector.
    policy_vectors:  {key: dim} vector observations of the policy, concatenated in this order
                     (e.g. {'proprio': 67} or, for a state teacher, {'state_teacher': 150}).
    value_vectors:   {key: dim} vector observations of the asymmetric critic (e.g. {'critic': 200}).
                     A key may appear in both groups; it is stored once.
    image_key:       key of the depth image in the observation dict, or None for no image.
    image_shape:     (C, H, W) of that image; required iff image_key is set.
    """

    action_dim: int
    policy_vectors: dict[str, int] = field(default_factory=dict)
    value_vectors: dict[str, int] = field(default_factory=dict)
    image_key: str | None = None
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.action_dim <= 0:
            raise ValueError(f"ObsSpec.action_dim must be > 0, got {self.action_dim}.")
        if (self.image_key is None) != (self.image_shape is None):
            raise ValueError("ObsSpec.image_key and image_shape must be set together (or both left None).")
        if self.image_shape is not None and (len(self.image_shape) != 3 or min(self.image_shape) <= 0):
            raise ValueError(f"ObsSpec.image_shape must be (C, H, W) positive, got {self.image_shape}.")
        if not self.policy_vectors and self.image_key is None:
            raise ValueError("ObsSpec needs at least one policy input: policy_vectors or image_key.")
        if not self.value_vectors:
            raise ValueError("ObsSpec.value_vectors must name at least one critic observation.")
        for group in (self.policy_vectors, self.value_vectors):
            for key, dim in group.items():
                if dim <= 0:
                    raise ValueError(f"ObsSpec vector {key!r} must have dim > 0, got {dim}.")
                if key == self.image_key:
                    raise ValueError(f"ObsSpec key {key!r} is used both as image and as vector.")
        for key in set(self.policy_vectors) & set(self.value_vectors):
            if self.policy_vectors[key] != self.value_vectors[key]:
                raise ValueError(f"ObsSpec vector {key!r} has two different dims in policy and value groups.")

    @property
    def vector_dims(self) -> dict[str, int]:
        """Every vector key once (policy first, then value-only keys) -> dim."""
        return {**self.policy_vectors, **self.value_vectors}

    @property
    def policy_vector_dim(self) -> int:
        return sum(self.policy_vectors.values())

    @property
    def value_vector_dim(self) -> int:
        return sum(self.value_vectors.values())
