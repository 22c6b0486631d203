"""Running normalizer: exact moments, parallel merge, rank hook, state_dict."""

import torch

from dexrl.rl import ObsNormalizer, RunningNormalizer, batch_moments, merge_moments, merge_moments_stacked


def test_running_stats_match_full_batch():
    torch.manual_seed(0)
    data = torch.randn(300, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([5.0, -2.0, 0.0])
    norm = RunningNormalizer((3,))
    for part in data.split([7, 100, 193]):
        norm.update(part)
    full = data.double()
    torch.testing.assert_close(norm.mean, full.mean(0))
    torch.testing.assert_close(norm.var, full.var(0, unbiased=False))
    assert norm.count.item() == 300
    y = norm.normalize(data)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.denormalize(y), data, atol=1e-4, rtol=1e-5)


def test_merge_by_hand():
    # a = {1, 3}: n 2, mean 2, M2 2.  b = {5}: n 1, mean 5, M2 0.
    # merged {1, 3, 5}: mean 3, M2 = 2 + 0 + (5-2)^2 * 2*1/3 = 2 + 6 = 8  (= 4 + 0 + 4)
    a = batch_moments(torch.tensor([1.0, 3.0]), ())
    b = batch_moments(torch.tensor([5.0]), ())
    n, mean, m2 = merge_moments(a, b)
    assert (n.item(), mean.item(), m2.item()) == (3.0, 3.0, 8.0)
    n2, mean2, m22 = merge_moments_stacked(torch.stack([a[0], b[0]]), torch.stack([a[1], b[1]]), torch.stack([a[2], b[2]]))
    assert (n2.item(), mean2.item(), m22.item()) == (3.0, 3.0, 8.0)


def test_reduce_hook_gives_every_rank_the_global_stats():
    torch.manual_seed(1)
    batches = [torch.randn(50, 2) + r for r in range(2)]  # what rank 0 and rank 1 see
    moments = [batch_moments(b, (2,)) for b in batches]

    received = []

    def all_gather_merge(count, mean, m2):  # what a comm module would do with all_gather
        received.append((count, mean, m2))
        return merge_moments_stacked(*(torch.stack(list(m)) for m in zip(*moments)))

    ranks = [RunningNormalizer((2,)) for _ in range(2)]
    for rank, batch in zip(ranks, batches):
        rank.update(batch, reduce_fn=all_gather_merge)
    # The hook gets each rank's own batch moments, not its running totals.
    for got, want in zip(received, moments, strict=True):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
    single = RunningNormalizer((2,))
    single.update(torch.cat(batches))
    for rank in ranks:
        torch.testing.assert_close(rank.mean, single.mean)
        torch.testing.assert_close(rank.var, single.var)


def test_identity_before_data_clip_and_state_dict():
    norm = RunningNormalizer((2,), clip=5.0)
    x = torch.tensor([[1.0, -2.0]])
    torch.testing.assert_close(norm.normalize(x), x, atol=1e-6, rtol=0)  # count 0: identity
    norm.update(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))  # mean 1, var 1
    assert norm.normalize(torch.tensor([[100.0, 1.0]])).tolist() == [[5.0, 0.0]]  # clipped at +5
    assert norm.normalize(torch.tensor([[-100.0, 1.0]])).tolist() == [[-5.0, 0.0]]  # and at -5
    norm.update(torch.tensor([[4.0, 4.0]]))  # {0, 2, 4}: count 3, mean 2, M2 8, var 8/3
    copy = RunningNormalizer((2,), clip=5.0)
    copy.load_state_dict(norm.state_dict())  # a fresh one has count 0, mean 0, var 1
    assert copy.count.item() == 3.0 and copy.mean.tolist() == [2.0, 2.0]
    torch.testing.assert_close(copy.var, torch.full((2,), 8.0 / 3.0, dtype=torch.float64))
    obs_norm = ObsNormalizer({"proprio": 2})
    obs_norm.update({"proprio": torch.tensor([[0.0, 0.0], [2.0, 2.0]])})
    out = obs_norm({"proprio": torch.tensor([[1.0, 3.0]]), "depth": torch.ones(1, 1, 2, 2)})
    assert torch.allclose(out["proprio"], torch.tensor([[0.0, 2.0]]))
    assert torch.equal(out["depth"], torch.ones(1, 1, 2, 2))  # images pass through
