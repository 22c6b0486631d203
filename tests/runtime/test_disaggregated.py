"""RemoteEnvs' requests in the order NCCL needs them, with a recording stand-in for comm."""

import torch

from dexrl.config.train import TrainConfig
from dexrl.runtime import comm
from dexrl.runtime.disaggregated import CMD_STEP, RemoteEnvs


def test_each_groups_results_are_received_before_the_next_groups_command_is_sent(monkeypatch):
    """NCCL runs a pair's requests in the order they were posted. A pipelined sim sends group
    0's results before it takes group 1's command, so the learner must post group 0's receive
    before group 1's send, or each side waits for the other (both go through gloo regardless)."""
    posted = []  # (peer, "send" | "recv", header as (command, group) for a send)
    hello = {"num_envs": 4, "groups": 2, "action_dim": 3, "image": ("depth", (2, 1, 6, 8), "torch.float16"),
             "vectors": {"proprio": 5, "critic": 7}}
    monkeypatch.setattr(comm, "wire_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(comm, "recv_object", lambda src, timeout_s, role: hello)
    monkeypatch.setattr(comm, "isend", lambda tensors, dst, role: posted.append((dst, "send", tuple(map(int, tensors[0][:2])))))
    monkeypatch.setattr(comm, "irecv", lambda buffers, src, role: posted.append((src, "recv", None)))
    monkeypatch.setattr(comm, "wait", lambda works, timeout_s, peer, role: None)
    cfg = TrainConfig(runtime="disagg", sim_ranks=2, pipeline=True)
    envs = RemoteEnvs(cfg, [0, 1], torch.device("cpu"), timeout_s=5.0)
    posted.clear()  # the first observations
    envs.step(torch.zeros(envs.n, 3))
    for sim in (0, 1):
        mine = [(kind, header) for peer, kind, header in posted if peer == sim]
        assert mine == [("send", (CMD_STEP, 0)), ("recv", None), ("send", (CMD_STEP, 1)), ("recv", None)], mine


def test_a_sim_waits_with_the_start_up_allowance_until_the_learners_first_step(monkeypatch):
    """Before its first step the learner may still be building its trainer and loading a
    checkpoint after it sent the ADR ranges: learner_timeout_s applies from that step on."""
    from dataclasses import replace

    from tests.conftest import tiny_config
    from dexrl.runtime.disaggregated import CMD_RANGES, CMD_STOP, SimRank

    monkeypatch.setattr(comm, "wire_device", lambda: torch.device("cpu"))
    cfg = replace(tiny_config(1), runtime="disagg", sim_ranks=1, learner_timeout_s=5.0)
    sim = SimRank(cfg, 0, 1, "cpu")
    script = iter([CMD_RANGES, CMD_STEP, CMD_STOP])
    waits = []  # (what, timeout) of each wait for the learner

    def irecv(buffers, src, role):
        buffers[0].zero_()[0] = next(script)
        return "recv"

    monkeypatch.setattr(comm, "send_object", lambda obj, dst, timeout_s, role: None)
    monkeypatch.setattr(comm, "recv_object", lambda src, timeout_s, role: (sim.envs[0].cfg.randomization,
                                                                          sim.envs[0].cfg.reward))
    monkeypatch.setattr(comm, "isend", lambda tensors, dst, role: "send")
    monkeypatch.setattr(comm, "irecv", irecv)
    monkeypatch.setattr(comm, "wait", lambda work, timeout_s, peer, role: waits.append((work, timeout_s)))
    sim.run()
    commands = [t for work, t in waits if work == "recv"]  # before ranges, before the step, before stop
    assert commands == [comm.STARTUP_TIMEOUT_S, comm.STARTUP_TIMEOUT_S, 5.0], commands


def test_a_pipelined_group_is_received_alone_and_in_world_order(monkeypatch):
    """Each world group is one contiguous half of the worlds (world g * N/2 + k * m + j is sim
    k's j-th of group g): receive_group waits only for its group's requests and gives its rows
    in world order; receive gives all N in world order."""
    waited = []  # the requests each receive waited for: (kind, peer, group)
    hello = {"num_envs": 4, "groups": 2, "action_dim": 3, "image": ("depth", (2, 1, 6, 8), "torch.float16"),
             "vectors": {"proprio": 5, "critic": 7}}
    monkeypatch.setattr(comm, "wire_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(comm, "recv_object", lambda src, timeout_s, role: hello)
    monkeypatch.setattr(comm, "isend", lambda tensors, dst, role: [("send", dst, int(tensors[0][1]))])
    monkeypatch.setattr(comm, "irecv", lambda buffers, src, role: [("recv", src, None)])
    monkeypatch.setattr(comm, "wait", lambda works, timeout_s, peer, role: waited.extend(works))
    envs = RemoteEnvs(TrainConfig(runtime="disagg", sim_ranks=2, pipeline=True), [0, 1], torch.device("cpu"), 5.0)
    reward = envs.columns["reward"]
    for sim in (0, 1):  # what each (sim, group) sends: its worlds' ids, as reward and as image
        for g in (0, 1):
            ids = torch.tensor([g * 4 + sim * 2 + j for j in (0, 1)], dtype=torch.float32)  # (m,)
            envs.replies[sim, g, :-1].view(2, -1)[:, reward] = ids[:, None]
            envs._reply_buffers(sim, g)[0].copy_(ids.view(2, 1, 1, 1).expand(2, 1, 6, 8))
    envs.send(torch.zeros(8, 3))
    waited.clear()
    got = envs.receive_group(1)
    assert sorted(waited) == [("recv", 0, None), ("recv", 1, None), ("send", 0, 1), ("send", 1, 1)]
    assert got.reward.tolist() == [4, 5, 6, 7]
    assert got.obs["depth"][:, 0, 0, 0].tolist() == [4, 5, 6, 7]
    envs.send_group(1, torch.zeros(4, 3))
    assert envs.receive().reward.tolist() == list(range(8))
