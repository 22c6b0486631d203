"""Procedural object set, user mesh folders and the compiled per-object properties."""

import mujoco
import numpy as np
import pytest

from dexrl.config.env import EnvConfig
from dexrl.sim.objects import (DESCRIPTOR_DIM, KINDS, MAX_MASS_KG, MIN_MASS_KG, ObjectSetConfig,
                               mesh_folder_objects, procedural_objects)
from dexrl.sim.robot import build_robot_xml
from dexrl.sim.scene import build_scene

PROCEDURAL = {"box", "cylinder", "sphere", "capsule", "ellipsoid", "convex"}
# A tetrahedron with 1 cm legs, as OBJ (1-based faces).
TETRA_OBJ = "v 0 0 0\nv 0.01 0 0\nv 0 0.01 0\nv 0 0 0.01\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


@pytest.fixture(scope="module")
def train():
    return procedural_objects(64, seed=0)


def test_64_objects_cover_every_procedural_kind(train):
    assert len(train) == 64
    assert {o.kind for o in train} == PROCEDURAL
    assert len({o.name for o in train}) == 64


def test_sizes_within_2_to_12_cm(train):
    for o in train:
        largest = np.ptp(o.vertices, axis=0).max()  # largest full extent, m
        assert 0.02 - 1e-9 <= largest <= 0.12 + 1e-9, (o.name, largest)


def test_same_seed_same_objects_and_seed_matters(train):
    again = procedural_objects(64, seed=0)
    for a, b in zip(train, again):
        np.testing.assert_array_equal(a.vertices, b.vertices)
    other = procedural_objects(64, seed=1)
    assert not any(np.array_equal(a.vertices, b.vertices) for a, b in zip(train, other))


def test_train_and_eval_splits_disjoint(train):
    held_out = procedural_objects(64, seed=0, split="eval")
    for e in held_out:
        assert not any(e.vertices.shape == t.vertices.shape and np.allclose(e.vertices, t.vertices) for t in train)


def test_compiled_properties_and_descriptor():
    scene = build_scene(EnvConfig(num_envs=2, depth=False, objects=ObjectSetConfig(num_objects=12)))
    props = scene.props
    assert props.descriptor.shape == (12, DESCRIPTOR_DIM) and DESCRIPTOR_DIM == 4 + len(KINDS) == 11
    assert ((props.body_mass >= MIN_MASS_KG - 1e-12) & (props.body_mass <= MAX_MASS_KG + 1e-12)).all()
    assets = procedural_objects(12, seed=0)
    for k, asset in enumerate(assets):
        d = props.descriptor[k]
        assert d[4 + KINDS.index(asset.kind)] == 1.0 and d[4:].sum() == 1.0  # kind one-hot
        assert np.all(np.diff(d[:3]) >= 0)  # sorted half-extents
        if asset.kind == "box":
            # A box's half-extents are half its vertex spans; volume = product of full spans.
            ptp = np.ptp(asset.vertices, axis=0)
            np.testing.assert_allclose(d[:3], np.sort(ptp / 2), rtol=1e-4)
            np.testing.assert_allclose(d[3], np.cbrt(np.prod(ptp)), rtol=1e-4)


def test_mesh_folder_with_one_obj(tmp_path):
    (tmp_path / "tetra.obj").write_text(TETRA_OBJ)
    (tmp_path / "notes.txt").write_text("ignored")
    objs = mesh_folder_objects(tmp_path)
    assert len(objs) == 1 and objs[0].kind == "mesh" and objs[0].name == "user_000_tetra"
    scene = build_scene(EnvConfig(num_envs=2, depth=False, objects=ObjectSetConfig(mesh_dir=str(tmp_path))))
    assert scene.props.names == [objs[0].name]
    assert scene.props.descriptor.shape == (1, DESCRIPTOR_DIM)
    assert scene.props.descriptor[0, 4 + KINDS.index("mesh")] == 1.0
    # Tetrahedron volume = 0.01^3 / 6; mass = 400 kg/m^3 * volume = 6.7e-5 kg -> clamped up to 0.03.
    assert scene.props.body_mass[0] == pytest.approx(MIN_MASS_KG)


# A 6 cm cube whose top face dips to a point 3 cm down at its centre: 14 faces, concave.
DENTED_CUBE_OBJ = "\n".join(
    [f"v {x} {y} {z}" for z in (0, 0.06) for y in (0, 0.06) for x in (0, 0.06)] + ["v 0.03 0.03 0.03"]
    + ["f 1 3 4", "f 1 4 2", "f 1 2 6", "f 1 6 5", "f 2 4 8", "f 2 8 6", "f 4 3 7", "f 4 7 8", "f 3 1 5",
       "f 3 5 7", "f 5 6 9", "f 6 8 9", "f 8 7 9", "f 7 5 9"]) + "\n"


def test_a_concave_mesh_is_seen_as_the_hull_it_collides_as(tmp_path):
    (tmp_path / "dented.obj").write_text(DENTED_CUBE_OBJ)
    scene = build_scene(EnvConfig(num_envs=1, depth=False, objects=ObjectSetConfig(mesh_dir=str(tmp_path))))
    # The renderer traces the mesh's faces: the hull's 12 triangles, not the file's 14 (whose
    # dent the physics, colliding with the hull, would fill).
    assert scene.mjm.mesh_facenum[scene.props.mesh_id[0]] == 12


def test_a_mesh_in_millimetres_is_a_clear_error(tmp_path):
    (tmp_path / "cube.obj").write_text(DENTED_CUBE_OBJ.replace("0.06", "60").replace("0.03", "30"))
    with pytest.raises(ValueError, match="'cube.obj' is 60 m across at scale 1.*mesh_scale=0.001"):
        mesh_folder_objects(tmp_path)
    assert np.ptp(mesh_folder_objects(tmp_path, scale=0.001)[0].vertices, axis=0) == pytest.approx([0.06] * 3)


def test_empty_or_missing_mesh_folder(tmp_path):
    with pytest.raises(ValueError, match="holds no .obj or .stl"):
        mesh_folder_objects(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        mesh_folder_objects(tmp_path / "missing")


def _robot_with_mesh(tmp_path) -> str:
    """Our robot plus one visual mesh geom, as a Menagerie robot would bring its meshes."""
    xml = build_robot_xml().replace(
        "<worldbody>",
        '<asset><mesh name="robot_mesh" vertex="0 0 0 0.01 0 0 0 0.01 0 0 0 0.01"/></asset><worldbody>'
        '<geom type="mesh" mesh="robot_mesh" class="visual" pos="0.5 0.5 0"/>', 1)
    path = tmp_path / "robot_with_mesh.xml"
    path.write_text(xml)
    return str(path)


@pytest.mark.parametrize("robot", [
    "builtin",
    "with_mesh",
])
def test_object_mesh_ids_are_scene_mesh_ids(tmp_path, robot):
    robot_xml = _robot_with_mesh(tmp_path) if robot == "with_mesh" else None
    scene = build_scene(EnvConfig(num_envs=2, depth=False, robot_xml=robot_xml,
                                  objects=ObjectSetConfig(num_objects=4)))
    ids = [mujoco.mj_name2id(scene.mjm, mujoco.mjtObj.mjOBJ_MESH, n) for n in scene.props.names]
    np.testing.assert_array_equal(scene.props.mesh_id, ids)
