"""`dexrl bench capacity`: planner math by hand, measured parts on tiny worlds, a role that fits."""

import json
import random

import pytest
import torch

import dexrl.bench.capacity as cap
import dexrl.bench.capacity.validate as cap_validate
from dexrl.bench.capacity import Budget, Parts
from dexrl.config.train import preset as load_preset

torch.set_num_threads(1)
RES = "80x60"  # the quickstart preset's camera; its small network keeps the learner probe fast


# ---- pure parts and planner ------------------------------------------------------------------------
def test_transit_is_depth_float16_plus_float32_vectors():
    # no vectors, no action: depth 160 * 120 * 2 B = 38,400 B, and reward, two flags and
    # 10 episode statistics: 4 * 13 B
    assert cap.transit_bytes_per_world(160, 120, 0, 0, 0) == 38_400 + 52
    # defaults: 38,400 + 4 * (69 proprio + 135 critic + 3 + 135 final critic + 10 + 23 action) = 38,400 + 1,500
    assert cap.transit_bytes_per_world(160, 120) == 39_900
    assert cap.transit_bytes_per_world(320, 240) == 320 * 240 * 2 + 1_500


def test_max_worlds_rounds_down_to_the_multiple():
    # 10 + 3n <= 100  ->  n <= 30; multiples of 4 -> 28; of 64 -> none fits
    assert cap.max_worlds(lambda n: 10 + 3 * n, 100, 1) == 30
    assert cap.max_worlds(lambda n: 10 + 3 * n, 100, 4) == 28
    assert cap.max_worlds(lambda n: 10 + 3 * n, 100, 64) == 0
    # n^2 <= 100 -> 10 -> 8 in multiples of 4
    assert cap.max_worlds(lambda n: n * n, 100, 4) == 8


def test_fits_are_exact():
    # y = 5 + 3x + 2x^2 through x = 2, 6, 10: 19, 95, 235
    assert cap.fit_quadratic({2: 19, 6: 95, 10: 235}) == (5.0, 3.0, 2.0)
    assert cap.fit_growth({2: 19, 6: 95, 10: 235}) == (5.0, 3.0, 2.0)
    # y = 7 + 4x through x = 1, 5
    assert cap.fit_linear({1: 11, 5: 27}) == (7.0, 4.0)


def test_a_curvature_of_noise_is_no_curvature():
    # 200 + 100x at x = 2, 6, 10 with the middle sample 1 B high: c = ((1001 - 602) / 4 - (602 -
    # 201) / 4) / 8 = -0.0625, which at 2^30 worlds would be memory below zero. The line through
    # the ends stands instead: 201 + 100 (x - 2) -> (1, 100).
    samples = {2: 201, 6: 602, 10: 1001}
    assert cap.fit_quadratic(samples)[2] == -0.0625
    assert cap.fit_growth(samples) == (1.0, 100.0, 0.0)
    a, b, c = cap.fit_growth(samples)
    r = cap.plan(Parts(physics_fixed=a, physics_per_world=b, physics_per_world_sq=c),
                 Budget(gpus=4, gpu_mem_bytes=1e6, sim_overhead_bytes=0, context_bytes=0, multiple=1))
    assert r["sim_max_per_gpu"] == 9_999  # (1e6 - 1) / 100


def test_plan_learner_bound_by_hand():
    p = Parts(num_minibatches=4, physics_per_world=1, transit_per_world=1, storage_per_env=3,
              update_per_minibatch_env=4, learner_fixed=100)
    b = Budget(gpus=4, gpu_mem_bytes=1000, sim_overhead_bytes=100, context_bytes=0, multiple=1)
    r = cap.plan(p, b)
    # dp rank: 100 sim overhead + 100 learner + n (1 physics + 3 storage + 1 observations held)
    # + 4 * n / 4 update = 200 + 6n <= 1000 -> 133
    assert (r["dp_per_gpu"], r["dp_total"]) == (133, 532)
    # sim rank: 100 + n (1 physics + 1 transit) <= 1000 -> 450
    assert r["sim_max_per_gpu"] == 450
    # learner: 100 + n (3 storage + 1 transit) + n update = 100 + 5n <= 1000 -> 180 (a multiple of 3 sims)
    assert r["learner_max_total"] == 180
    # 60 per sim GPU, 180 in total: 180 / 532
    assert (r["disagg_per_gpu"], r["disagg_total"], r["disagg_bound"]) == (60, 180, "learner")
    assert r["ratio"] == pytest.approx(180 / 532)
    # ceiling: 3 sim GPUs x 450, as if the learner held every rollout: 1350 / 532
    assert r["ratio_ceiling"] == pytest.approx(1350 / 532)
    # inference 2 B/env beats the update's 1 B/env: learner 100 + 4n + 2n <= 1000 -> 150
    r = cap.plan(Parts(**{**vars(p), "inference_per_env": 2}), b)
    assert (r["learner_max_total"], r["disagg_total"]) == (150, 150)


def test_overlap_update_doubles_the_rollout_and_copies_the_params_by_hand():
    p = Parts(num_minibatches=4, physics_per_world=1, transit_per_world=1, storage_per_env=3,
              update_per_minibatch_env=4, learner_fixed=100, params_bytes=20)
    b = Budget(gpus=4, gpu_mem_bytes=1000, sim_overhead_bytes=100, context_bytes=0, multiple=1, overlap_update=True)
    assert (b.rollouts, cap.storage_device_bytes(p, b), cap.learner_fixed_bytes(p, b)) == (2, 6, 120)
    r = cap.plan(p, b)
    # dp rank: 100 + 120 + n (1 physics + 6 storage + 1 observations) + n update = 220 + 9n <= 1000 -> 86
    assert r["dp_per_gpu"] == 86
    # learner: 120 + n (6 storage + 1 transit) + n update = 120 + 8n <= 1000 -> 110 -> 108 (3 sims)
    assert (r["learner_max_total"], r["disagg_total"]) == (108, 108)
    # Inference (2 B/env) runs on the collector thread beside the update: both count, not the
    # larger: learner 120 + 8n + 2n <= 1000 -> 88 -> 87 (3 sims); without overlap max(n, 2n).
    q = Parts(**{**vars(p), "inference_per_env": 2})
    assert cap.learner_transient_bytes(q, b, 40) == 40 + 80
    assert cap.plan(q, b)["learner_max_total"] == 87
    host = Budget(**{**vars(b), "image_storage": "host", "host_mem_bytes": 600})
    assert cap.storage_host_bytes(Parts(storage_per_env=3, storage_image_per_env=2), host) == 4


def test_microbatches_and_encoder_chunks_make_transients_fixed_by_hand():
    p = Parts(num_minibatches=4, update_per_minibatch_env=10, inference_per_env=1, inference_encoder_per_env=4)
    whole = Budget(gpus=2, gpu_mem_bytes=1e9)
    bounded = Budget(gpus=2, gpu_mem_bytes=1e9, microbatch_envs=8, encoder_chunk=16)
    # n = 400: minibatch 100 envs -> update 1000; inference 400 * (1 + 4) = 2000
    assert cap.learner_transient_bytes(p, whole, 400) == 2000
    # micro-batches of 8 -> update 80; encoder on 16 at a time -> 400 * 1 + 16 * 4 = 464
    assert cap.learner_transient_bytes(p, bounded, 400) == 464
    # below the bounds nothing changes: n = 8 -> minibatch 2 (update 20), encoder on all 8 (8 + 32)
    assert cap.learner_transient_bytes(p, bounded, 8) == cap.learner_transient_bytes(p, whole, 8) == 40


def test_host_image_storage_by_hand():
    p = Parts(physics_per_world=1, storage_per_env=4, storage_image_per_env=3, transit_per_world=1)
    b = Budget(gpus=4, gpu_mem_bytes=1000, sim_overhead_bytes=100, context_bytes=0, multiple=1,
               image_storage="host", host_mem_bytes=6000)
    assert (cap.storage_device_bytes(p, b), cap.storage_host_bytes(p, b)) == (1, 3)
    r = cap.plan(p, b)
    # dp rank: 100 + n (1 physics + 1 device storage + 1 observations) <= 1000 -> 300 per GPU,
    # and the host holds 4 ranks x n x 3 B <= 6000 -> n <= 500: 300 stands (gpu-bound)
    assert (r["dp_per_gpu"], r["dp_bound"]) == (300, "gpu")
    # sim: 100 + 2n -> 450; learner: n (1 storage + 1 transit) <= 1000 -> 498 (multiple of 3),
    # host: 3n <= 6000 -> 1998; the learner bound 498 -> 166 per sim GPU
    assert (r["sim_max_per_gpu"], r["learner_max_total"], r["disagg_total"]) == (450, 498, 498)
    # A small host binds: 3n <= 900 -> 300 worlds in all for disaggregated, 75 per DP rank.
    r = cap.plan(p, Budget(**{**vars(b), "host_mem_bytes": 900}))
    assert (r["learner_max_total"], r["disagg_total"]) == (300, 300)
    assert (r["dp_per_gpu"], r["dp_bound"]) == (75, "host")
    with pytest.raises(ValueError, match="image_storage"):
        Budget(gpus=2, gpu_mem_bytes=1, image_storage="disk")


def test_plan_sim_bound_and_fixed_costs_by_hand():
    b = Budget(gpus=4, gpu_mem_bytes=1000, sim_overhead_bytes=100, context_bytes=0, multiple=1)
    r = cap.plan(Parts(physics_per_world=10, storage_per_env=1), b)
    # dp: 100 + 11n <= 1000 -> 81 (324 total); sim: 100 + 10n -> 90; learner: n <= 1000 -> 999 (multiple of 3)
    assert (r["dp_total"], r["sim_max_per_gpu"], r["learner_max_total"]) == (324, 90, 999)
    assert (r["disagg_per_gpu"], r["disagg_total"], r["disagg_bound"]) == (90, 270, "sim")
    # Disaggregation wins only through fixed costs every DP rank pays: 600 B sim overhead.
    b = Budget(gpus=4, gpu_mem_bytes=1000, sim_overhead_bytes=600, context_bytes=0, multiple=1)
    r = cap.plan(Parts(physics_per_world=1, storage_per_env=1), b)
    # dp: 600 + 2n -> 200 (800); sim: 600 + n -> 400; learner: n -> 999, 333 per sim: 999 total
    assert (r["dp_total"], r["disagg_per_gpu"], r["disagg_total"]) == (800, 333, 999)
    assert r["ratio"] == pytest.approx(999 / 800)
    # bound: (4 x 1000 - 0 - 3 x 600) / (4 x (1000 - 600 - 0)) = 2200 / 1600
    assert r["ratio_bound"] == pytest.approx(2200 / 1600)
    # The learner's fixed bytes and one micro-batch's update count as L: 100 + 2 x 50 = 200,
    # (4000 - 200 - 1800) / (4 x (1000 - 600 - 200)) = 2000 / 800
    r = cap.plan(Parts(physics_per_world=1, storage_per_env=1, learner_fixed=100, update_per_minibatch_env=50),
                 Budget(**{**vars(b), "microbatch_envs": 2}))
    assert r["ratio_bound"] == pytest.approx(2000 / 800)


def test_quadratic_physics_term_limits_worlds():
    # sim rank: n^2 <= 100 -> 10 -> 8 in multiples of 4
    p = Parts(physics_per_world_sq=1)
    b = Budget(gpus=2, gpu_mem_bytes=100, sim_overhead_bytes=0, context_bytes=0, multiple=4)
    assert cap.plan(p, b)["sim_max_per_gpu"] == 8


def test_without_fixed_costs_disaggregation_never_holds_more_worlds():
    # DP total G M / (s + l) >= min((G-1) M / s, M / l) for any s, l > 0 (up to rounding, G worlds).
    rng = random.Random(0)
    for _ in range(200):
        p = Parts(physics_per_world=rng.uniform(1, 100), storage_per_env=rng.uniform(1, 100),
                  transit_per_world=rng.uniform(0, 10), update_per_minibatch_env=rng.uniform(0, 100))
        b = Budget(gpus=rng.randint(2, 8), gpu_mem_bytes=1e6, sim_overhead_bytes=0, context_bytes=0, multiple=1)
        r = cap.plan(p, b)
        assert r["disagg_total"] <= r["dp_total"] + b.gpus
        assert r["ratio"] <= r["ratio_ceiling"]
        assert r["ratio_bound"] == 1.0


def test_no_memory_per_world_beats_the_fixed_cost_bound():
    rng = random.Random(1)
    for _ in range(300):
        micro = rng.choice([0, 8, 64])
        p = Parts(physics_fixed=rng.uniform(0, 2e5), physics_per_world=rng.uniform(1, 100),
                  storage_per_env=rng.uniform(1, 100), transit_per_world=rng.uniform(0, 10),
                  policy_state_per_env=rng.uniform(0, 10), update_per_minibatch_env=rng.uniform(0, 100),
                  inference_per_env=rng.uniform(0, 5), learner_fixed=rng.uniform(0, 3e5))
        b = Budget(gpus=rng.randint(2, 8), gpu_mem_bytes=1e6, sim_overhead_bytes=rng.uniform(0, 2e5),
                   context_bytes=rng.uniform(0, 5e4), multiple=1, microbatch_envs=micro)
        r = cap.plan(p, b)
        if r["ratio"] is not None and r["ratio_bound"] is not None:
            assert r["ratio"] <= r["ratio_bound"] * (1 + 1e-3) + b.gpus / r["dp_total"], (p, b, r)


def test_budget_needs_two_gpus():
    with pytest.raises(ValueError, match=">= 2 GPUs"):
        Budget(gpus=1, gpu_mem_bytes=1e9)


# ---- measured parts ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts() -> Parts:
    return cap.measure_parts(RES, preset="quickstart", device="cpu", num_envs_probe=2)


def test_measured_parts_are_positive(parts):
    assert parts.resolution == RES and parts.device == "cpu"
    for name in ("physics_per_world", "render_per_world", "env_per_world", "storage_per_env",
                 "update_per_minibatch_env", "inference_per_env", "params_bytes"):
        assert getattr(parts, name) > 0, name
    # the optimizer step's measured peak holds at least the gradients (one copy of the params)
    assert max(parts.samples["optimizer_step"].values()) >= parts.params_bytes
    # the depth buffer alone is 80 * 60 * 4 B per world
    assert parts.render_per_world >= 80 * 60 * 4
    assert parts.transit_per_world >= 80 * 60 * 2
    json.dumps(cap.parts_json(parts))


def test_physics_bytes_fit_three_world_counts(parts):
    s = parts.samples["physics"]
    assert sorted(s) == [2, 6, 10]
    a, b, c = parts.physics_fixed, parts.physics_per_world, parts.physics_per_world_sq
    assert c >= 0  # no curvature of noise survives (fit_growth)
    for n in (2, 10):  # a line or a parabola through the ends
        assert a + b * n + c * n * n == pytest.approx(s[n], rel=1e-9)
    # the tracker sees at least every array of the model and data
    assert all(s[n] >= parts.samples["physics_arrays"][n] for n in s)
    # render and env are linear: the middle count sits on the line through the ends (1 %)
    for part in ("render", "env"):
        pts = parts.samples[part]
        mid = pts[2] + (pts[10] - pts[2]) * (6 - 2) / (10 - 2)
        assert pts[6] == pytest.approx(mid, rel=0.01), part


def test_physics_bytes_are_linear_in_worlds(parts):
    s = parts.samples["physics"]
    mid = s[2] + (s[10] - s[2]) * (6 - 2) / (10 - 2)
    assert s[6] == pytest.approx(mid, rel=0.01)


def test_table_prints_table_one(parts):
    b = Budget(gpus=4, gpu_mem_bytes=48 * cap.GIB)
    results = {s: cap.plan(parts, Budget(gpus=4, gpu_mem_bytes=48 * cap.GIB, image_storage=s)) for s in cap.IMAGE_STORAGE}
    text = cap.format_table(parts, b, results)
    assert "Table I" in text and "data parallel" in text and "disaggregated" in text and "host memory" in text
    assert results["device"]["dp_total"] == 4 * results["device"]["dp_per_gpu"] > 0
    # Host storage takes the images off the GPUs: never fewer worlds in either layout.
    for key in ("dp_total", "disagg_total"):
        assert results["host"][key] >= results["device"][key], key


def test_measured_image_share_and_encoder_share(parts):
    assert parts.storage_image_per_env == 16 * 60 * 80 * 2  # quickstart: T = 16, 80x60, float16
    assert 0 < parts.storage_image_per_env < parts.storage_per_env
    # The encoder's first feature map alone is 8 x 28 x 38 float32 per image.
    assert parts.inference_encoder_per_env >= 8 * 28 * 38 * 4


# ---- validation ---------------------------------------------------------------------------------------
def test_validate_role_fits_at_tiny_size_on_cpu(monkeypatch):
    steps = []
    monkeypatch.setattr(cap_validate.PPO, "_step", lambda self, *a: steps.append(1) or {})
    out = cap.validate_role("dp", 4, RES, device="cpu", preset="quickstart")
    assert out["fits"] is True and out["error"] is None and out["image_storage"] == "device"
    # One epoch of the preset's minibatches: the update's peak is in its first step.
    assert len(steps) == load_preset("quickstart").ppo.num_minibatches
    monkeypatch.undo()
    out = cap.validate_role("learner", 4, RES, device="cpu", preset="quickstart", image_storage="host",
                            overlap_update=True)
    assert out["fits"] is True and out["image_storage"] == "host" and out["overlap_update"] is True


def test_validate_role_reports_running_out_of_memory(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cap_validate, "_allocate_role", oom)
    out = cap.validate_role("sim", 4, RES, device="cpu", preset="quickstart")
    assert out["fits"] is False and "out of memory" in out["error"]
    with pytest.raises(ValueError, match="role must be one of"):
        cap.validate_role("actor", 4, RES, device="cpu")


def test_cli_prints_both_storages_and_json_last(capsys):
    from dexrl.cli import main

    assert main(["bench", "capacity", "--resolution", RES, "--preset", "quickstart", "--gpus", "4",
                 "--gpu-mem-gib", "8", "--image-storage", "host", "--microbatch-envs", "64", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert last["setup"]["microbatch_envs"] == 64 and last["setup"]["image_storage"] == "host"
    row = last[RES]
    assert {"dp_total", "disagg_total", "ratio"} <= set(row) and row["image_storage"] == "host"
    assert row["disagg_total"] == row["by_image_storage"]["host"]["disagg_total"]
    assert any("rollout images in host memory" in line for line in out)
    assert any(line.split()[:2] == ["ceiling", format(row["ratio_ceiling"], ".2f")] for line in out)


def test_validate_plan_yields_each_check_and_bounds_each_process(monkeypatch):
    """On a lent GPU each role is one device call: a process that overruns is reported, not
    waited for, and checks already made are not lost with a call cut short."""
    import subprocess

    ran = []

    def run(cmd, **kwargs):
        ran.append(json.loads(cmd[-1])["num_envs"])
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(cap_validate.subprocess, "run", run)
    plan = {"sim_max_per_gpu": 1000, "learner_max_total": 2000, "dp_per_gpu": 500}
    checks = cap.validate_plan(plan, RES, device="cpu", preset="quickstart", roles=("learner",), timeout_s=7)
    first = next(checks)  # one process has run, the +10% one not yet
    assert ran == [2000] and first["at"] == "predicted" and first["role"] == "learner"
    assert first["fits"] is None and first["error"] == "no result within 7 s"
    num_minibatches = load_preset("quickstart").ppo.num_minibatches
    assert [c["num_envs"] for c in checks] == [-(-2200 // num_minibatches) * num_minibatches]
