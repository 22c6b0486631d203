"""Procedural, seeded graspable objects, and a user's folder of OBJ/STL meshes.

Every object becomes one convex mesh (MuJoCo takes the convex hull of the points), so all
worlds share a single object geom whose mesh id, frame and inertia are per-world model
fields: reassigning objects at reset needs no recompilation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("box", "cylinder", "sphere", "capsule", "ellipsoid", "convex", "mesh")
MIN_SIZE_M, MAX_SIZE_M = 0.02, 0.12
# Light enough for the Allegro's 0.5 N·m fingers, heavy enough to matter: mass is the hull
# volume times DENSITY, clamped to [MIN_MASS_KG, MAX_MASS_KG].
DENSITY = 400.0
MIN_MASS_KG, MAX_MASS_KG = 0.03, 0.25
DESCRIPTOR_DIM = 4 + len(KINDS)  # sorted half-extents (3), cube root of volume (1), kind one-hot


@dataclass(frozen=True)
class ObjectAsset:
    """One object: a point cloud whose convex hull is the shape (metres, object frame)."""

    name: str
    kind: str
    vertices: np.ndarray  # (V, 3) float64
    rgba: tuple[float, float, float, float] = (0.8, 0.3, 0.2, 1.0)


@dataclass(frozen=True)
class ObjectSetConfig:
    """Which objects the worlds draw from."""

    num_objects: int = 64
    seed: int = 0
    split: str = "train"  # "train" or "eval" (a disjoint, held-out set from the same generator)
    mesh_dir: str | None = None  # a folder of .obj/.stl files replaces the procedural set
    mesh_scale: float = 1.0

    def __post_init__(self):
        if self.split not in ("train", "eval"):
            raise ValueError(f"objects.split must be 'train' or 'eval', got {self.split!r}")
        if self.num_objects < 1:
            raise ValueError(f"objects.num_objects must be >= 1, got {self.num_objects}")
        if not self.mesh_scale > 0:
            raise ValueError(f"objects.mesh_scale must be > 0 (metres per mesh-file unit), got {self.mesh_scale}")
        if self.mesh_dir is not None and self.split != "train":
            raise ValueError("objects.split 'eval' is the procedural set's held-out split; a mesh folder has none: "
                             "pass a folder of held-out meshes as the mesh_dir instead")


def _sphere_points(n_lat: int = 6, n_lon: int = 10) -> np.ndarray:
    """Unit-sphere points on a latitude/longitude grid plus the poles: (2 + n_lat*n_lon, 3)."""
    lat = np.linspace(0, np.pi, n_lat + 2)[1:-1]
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    pts = np.stack([np.sin(la) * np.cos(lo), np.sin(la) * np.sin(lo), np.cos(la)], -1).reshape(-1, 3)
    return np.concatenate([pts, [[0, 0, 1], [0, 0, -1]]])


def _circle(n: int = 16) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], -1)  # (n, 2)


def _shape_points(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Points of one shape whose extents all lie in [MIN_SIZE_M, MAX_SIZE_M]: the largest is
    U(2 * MIN_SIZE_M, MAX_SIZE_M), the other two at least MIN_SIZE_M and 45% of it."""
    size = rng.uniform(2 * MIN_SIZE_M, MAX_SIZE_M)  # largest full extent
    aspect = rng.uniform(max(0.45, MIN_SIZE_M / size), 1.0, size=2)  # the two other extents, relative
    if kind == "box":
        half = 0.5 * size * np.array([1.0, *aspect])
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return corners * half
    if kind == "cylinder":
        r, h = 0.5 * size * aspect[0], 0.5 * size
        ring = _circle() * r
        return np.concatenate([np.c_[ring, np.full(len(ring), -h)], np.c_[ring, np.full(len(ring), h)]])
    if kind == "sphere":
        return _sphere_points() * 0.5 * size
    if kind == "capsule":
        r = 0.5 * size * aspect[0] * 0.8
        h = max(0.5 * size - r, 0.0)
        pts = _sphere_points() * r
        pts[:, 2] += np.where(pts[:, 2] >= 0, h, -h)
        return pts
    if kind == "ellipsoid":
        return _sphere_points() * 0.5 * size * np.array([1.0, *aspect])
    if kind == "convex":
        pts = rng.normal(size=(int(rng.integers(10, 24)), 3)) * np.array([1.0, *aspect])
        pts /= np.max(np.ptp(pts, axis=0))
        return pts * size
    raise ValueError(f"unknown object kind {kind!r}")


def procedural_objects(num_objects: int, seed: int, split: str = "train") -> list[ObjectAsset]:
    """``num_objects`` seeded shapes cycling through the primitive kinds. The held-out split
    draws from an independent stream, so no object of one split appears in the other."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    kinds = KINDS[:-1]
    out = []
    for i in range(num_objects):
        kind = kinds[i % len(kinds)]
        rgba = (*rng.uniform(0.15, 0.95, size=3), 1.0)
        out.append(ObjectAsset(f"{split}_{i:03d}_{kind}", kind, vertices=_shape_points(kind, rng), rgba=rgba))
    return out


# A user's mesh outside these extents is most likely in other units (an STL in millimetres).
USER_MIN_EXTENT_M, USER_MAX_EXTENT_M = 0.005, 0.5


def mesh_folder_objects(folder: str | Path, scale: float = 1.0) -> list[ObjectAsset]:
    """Every .obj/.stl file in ``folder`` (sorted by name) as an object: its vertices, whose
    convex hull is then both what collides and what the cameras see (MuJoCo collides a mesh
    as its hull, while the renderer would trace the file's own faces: a cup's cavity would
    show in depth but hold nothing)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        raise ValueError(f"object mesh folder {str(path)!r} {problem}; pass a folder of .obj/.stl files")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".obj", ".stl"))
    if not files:
        raise ValueError(f"object mesh folder {str(path)!r} holds no .obj or .stl file")
    return [ObjectAsset(f"user_{i:03d}_{p.stem}", "mesh", vertices=_mesh_vertices(p.resolve(), scale))
            for i, p in enumerate(files)]


def _mesh_vertices(file: Path, scale: float) -> np.ndarray:
    """(V, 3) vertices of a mesh file as MuJoCo reads it, scaled; its size checked."""
    import mujoco

    spec = mujoco.MjSpec()
    spec.add_mesh(name="m", file=str(file), scale=[scale] * 3)
    try:
        m = spec.compile()
    except ValueError as exc:
        raise ValueError(f"object mesh {str(file)!r} cannot be read: {exc}") from None
    vertices = m.mesh_vert.astype(np.float64)
    extent = float((vertices.max(0) - vertices.min(0)).max())
    if not USER_MIN_EXTENT_M <= extent <= USER_MAX_EXTENT_M:
        raise ValueError(f"object mesh {file.name!r} is {extent:.4g} m across at scale {scale:g}; graspable "
                         f"objects are {USER_MIN_EXTENT_M:g}-{USER_MAX_EXTENT_M:g} m: if the file is in "
                         "millimetres, pass --mesh-scale 0.001 (train: --set env.objects.mesh_scale=0.001)")
    return vertices


def load_objects(cfg: ObjectSetConfig) -> list[ObjectAsset]:
    if cfg.mesh_dir:
        return mesh_folder_objects(cfg.mesh_dir, cfg.mesh_scale)
    return procedural_objects(cfg.num_objects, cfg.seed, cfg.split)


@dataclass
class ObjectProperties:
    """Compiled properties of every object, stacked: what one world needs to hold object k.

    All arrays have a leading object axis K; they are written into per-world model fields.
    """

    mesh_id: np.ndarray  # (K,) int
    geom_pos: np.ndarray  # (K, 3) mesh frame in the object body
    geom_quat: np.ndarray  # (K, 4)
    geom_aabb: np.ndarray  # (K, 6)
    geom_rbound: np.ndarray  # (K,)
    geom_rgba: np.ndarray  # (K, 4)
    body_mass: np.ndarray  # (K,)
    body_inertia: np.ndarray  # (K, 3)
    body_ipos: np.ndarray  # (K, 3)
    body_iquat: np.ndarray  # (K, 4)
    body_invweight0: np.ndarray  # (K, 2)
    descriptor: np.ndarray  # (K, DESCRIPTOR_DIM) float32
    names: list[str] = field(default_factory=list)


def descriptor(kind: str, half_extents: np.ndarray, volume: float) -> np.ndarray:
    """Shape descriptor: sorted half-extents (m), cube root of volume (m), kind one-hot."""
    onehot = np.zeros(len(KINDS))
    onehot[KINDS.index(kind)] = 1.0
    return np.concatenate([np.sort(half_extents), [np.cbrt(max(volume, 0.0))], onehot]).astype(np.float32)
