"""Counter-based random numbers per world: pure functions of integer keys, no generator state.

Every number the env draws is ``hash(seed, global world id, stream, counter, element)``, so a
world's randomness does not depend on how many worlds share its process, on which other
worlds finished an episode, or on whether a masked reset ran at all: one env of N worlds and
K envs of N/K worlds (``EnvConfig.world_offset``) draw the same numbers for the same world.

The hash is splitmix64 (Steele, Lea & Flood 2014; the finalizer passes BigCrush): each
(seed, world, stream, counter) gets a pseudo-random 64-bit state ``s`` = hash(seed, world,
stream) ^ hash(counter), and element ``e`` of the draw is ``mix64(s + (e + 1) * GOLDEN)``,
the e-th output of a splitmix64 stream seeded at ``s``: one hash per random value. It runs on int64 tensors: multiplication wraps modulo 2**64 (two's complement on
CPU and CUDA alike; ``tests/sim/test_rng.py`` checks it against Python integers) and
logical right shifts are arithmetic shifts with the sign-extended bits masked off.
"""

from __future__ import annotations

from enum import IntEnum

import torch

Counter = int | torch.Tensor  # an int, or a LongTensor (N,) with one value per world


def _signed(c: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


GOLDEN = _signed(0x9E3779B97F4A7C15)  # 2**64 / golden ratio, odd
_M1, _M2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` on int64 is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer, a bijection of 64-bit words; int64 in, int64 out."""
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def mix64_int(x: int) -> int:
    """``mix64`` on a Python int (unsigned 64-bit result): the reference for the tensor code."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Stream(IntEnum):
    """One stream per draw site: adding or removing a draw never shifts another's numbers.

    Reset-time streams are keyed by the world's episode counter; step-time streams by
    (episode counter, step within the episode).
    """

    RESET_OBJECT = 1  # object choice U{0..K-1}
    RESET_FRICTION = 2  # friction scale
    RESET_GAINS = 3  # (kp scale, kd scale)
    RESET_JOINT_FRICTION = 4  # frictionloss per joint
    RESET_MASS = 5  # object mass scale
    RESET_CAMERA_POS = 6  # rig position offset (3)
    RESET_CAMERA_ANGLE = 7  # rig rotation angle
    RESET_CAMERA_AXIS = 8  # rig rotation axis, N(0, I3) normalized
    RESET_SPAWN_XY = 9  # object spawn offset (2)
    RESET_SPAWN_ANGLE = 10  # object tilt angle
    RESET_SPAWN_AXIS = 11  # object tilt axis, N(0, I3) normalized
    RESET_JOINT_POS = 12  # joint position noise (23)
    RESET_JOINT_VEL = 13  # joint velocity noise (23)
    RESET_OBS_NOISE = 14  # per-episode observation noise: widths and biases of every quantity
    STEP_OBS_NOISE = 20  # per-step observation noise, U(-1, 1) per observed value
    STEP_DISTURB_DIR = 21  # disturbance direction, N(0, I3) normalized
    STEP_DISTURB_MAG = 22  # disturbance magnitude
    CAMERA_CORRELATED = 30  # low-resolution N(0, 1) field of the correlated depth noise
    CAMERA_PIXEL = 31  # per pixel: random-depth mask, random depth, dropout mask


class WorldRNG:
    """Counter-based draws for the worlds ``world_ids`` (N,) (their global ids) under ``seed``.

    ``rng.at(counter)`` keys a batch of draws by a counter: an int, a LongTensor (N,) or a
    tuple of them; its methods return (N, *shape_tail). Same arguments, same numbers, always.
    """

    def __init__(self, seed: int, world_ids: torch.Tensor):
        self.world_ids = world_ids.to(torch.long)  # (N,) global world ids
        self.n, self.device = world_ids.shape[0], world_ids.device
        seed_key = _signed(mix64_int(mix64_int(seed) ^ GOLDEN))
        self._world_key = mix64((self.world_ids * GOLDEN) ^ seed_key)  # (N,) int64
        self._stream_keys: dict[int, torch.Tensor] = {}
        self._offsets: dict[int, torch.Tensor] = {}

    def at(self, counter: Counter | tuple[Counter, ...]) -> "Draws":
        key = torch.full((), GOLDEN, dtype=torch.long, device=self.device)
        for c in counter if isinstance(counter, tuple) else (counter,):  # absorbed in order
            c = torch.as_tensor(c, dtype=torch.long, device=self.device)
            key = mix64(key ^ mix64(c + GOLDEN))  # + GOLDEN: a zero counter is not mix64's fixed point 0
        return Draws(self, key.expand(self.n))

    def stream_key(self, stream: int) -> torch.Tensor:
        if stream not in self._stream_keys:  # (N,) int64: hash of (seed, world id, stream)
            self._stream_keys[stream] = mix64(self._world_key ^ _signed(mix64_int(int(stream) + 1)))
        return self._stream_keys[stream]

    def element_offsets(self, m: int) -> torch.Tensor:
        if m not in self._offsets:  # (m,) int64: (e + 1) * GOLDEN
            self._offsets[m] = torch.arange(1, m + 1, device=self.device, dtype=torch.long) * GOLDEN
        return self._offsets[m]


class Draws:
    """The draws of one counter value per world (see ``WorldRNG.at``). Element ``e`` of a
    draw from ``stream`` is the e-th splitmix64 output from the state
    ``hash(seed, world, stream) ^ hash(counter)``: one hash per value."""

    def __init__(self, rng: WorldRNG, counter_key: torch.Tensor):
        self.rng, self.counter_key = rng, counter_key  # (N,) int64

    def bits(self, stream: int, shape_tail: tuple = ()) -> torch.Tensor:
        """(N, *shape_tail) int64 of 64 random bits each."""
        m = 1
        for d in shape_tail:
            m *= d
        state = self.rng.stream_key(stream) ^ self.counter_key  # (N,)
        z = mix64(state[:, None] + self.rng.element_offsets(m))  # (N, m)
        return z.view((self.rng.n, *shape_tail))

    def uniforms(self, stream: int, shape_tail: tuple, k: int) -> list[torch.Tensor]:
        """``k`` independent U[0, 1) float32 tensors (N, *shape_tail) from one hash: each
        takes its own min(24, 64 // k) bits, so k <= 3 keeps at least 21 bits."""
        b = min(24, 64 // k)
        z = self.bits(stream, shape_tail)
        return [_shr(z, 64 - b * (i + 1)).bitwise_and((1 << b) - 1).to(torch.float32) * (2.0 ** -b)
                for i in range(k)]

    def uniform(self, stream: int, shape_tail: tuple = (), lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """U[lo, hi) float32 (N, *shape_tail), 24 random bits each."""
        u = self.uniforms(stream, shape_tail, 1)[0]
        return lo + (hi - lo) * u

    def normal(self, stream: int, shape_tail: tuple = ()) -> torch.Tensor:
        """N(0, 1) float32 (N, *shape_tail) by Box-Muller (one hash per value, cosine branch;
        |x| <= 5.8 because 1 - u1 >= 2**-24)."""
        u1, u2 = self.uniforms(stream, shape_tail, 2)
        r = torch.sqrt(-2.0 * torch.log1p(-u1))  # log(1 - u1), 1 - u1 in (0, 1]
        return r * torch.cos((2.0 * torch.pi) * u2)

    def randint(self, stream: int, shape_tail: tuple, high: int) -> torch.Tensor:
        """U{0, ..., high - 1} int64 (N, *shape_tail) (modulo bias below high / 2**63)."""
        return _shr(self.bits(stream, shape_tail), 1) % high
