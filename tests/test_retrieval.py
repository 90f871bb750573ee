"""foresight.retrieval: exact ranks on hand cases, the tie rule, random predictions at k/pool, template sharing, the
falsification rule."""
import math
import numpy as np, pytest, torch
from foresight.retrieval import (retrieval_ranks, retrieval_metrics, metrics_from_ranks, random_baseline,
                                 template_sharing, falsification_verdict, future_vs_random, retrieval_vs_random,
                                 derangement)

torch.set_num_threads(1)   # small problems on a shared CPU: contended OpenMP threads are many times slower


def test_identity_gives_rank_one():
    x = torch.randn(200, 24, generator=torch.Generator().manual_seed(0))
    assert retrieval_metrics(x, x) == {'R@1': 1.0, 'R@5': 1.0, 'R@10': 1.0, 'MRR': 1.0}
    assert retrieval_metrics(x, x, pool=100) == {'R@1': 1.0, 'R@5': 1.0, 'R@10': 1.0, 'MRR': 1.0}
    assert retrieval_metrics(x.numpy(), x.numpy(), chunk=7)['MRR'] == 1.0      # arrays and small chunks


def test_known_permutation_gives_known_ranks():
    # one-hot targets: query i scores target j by S[i, j]; S rows are permutations of n..1, so the
    # true match's rank is its place in the row
    n = 30
    g = torch.Generator().manual_seed(1)
    order = torch.stack([torch.randperm(n, generator=g) for _ in range(n)])   # order[i] = targets in decreasing score
    S = torch.empty(n, n)
    S.scatter_(1, order, torch.arange(n, 0, -1).float().expand(n, n))
    want = (order == torch.arange(n)[:, None]).float().argmax(1) + 1
    assert torch.equal(retrieval_ranks(S, torch.eye(n)), want)
    assert torch.equal(retrieval_ranks(S, torch.eye(n), chunk=4), want)
    m = retrieval_metrics(S, torch.eye(n))
    assert m['R@1'] == (want == 1).float().mean().item() and math.isclose(m['MRR'], (1 / want.double()).mean().item())


def test_permuted_targets():
    # pred[i] = targets[perm[i]] exactly: the query finds targets[perm[i]] first, so the true match is 2nd
    # unless perm[i] == i
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(2))
    perm = torch.roll(torch.arange(50), 1)
    r = retrieval_ranks(x[perm], x)
    assert (r >= 2).all() and metrics_from_ranks(r)['R@1'] == 0.0


def test_ties_count_against_the_query():
    z = torch.ones(6, 4)
    assert torch.equal(retrieval_ranks(z, z), torch.full((6,), 6))                        # all tied: last
    assert torch.equal(retrieval_ranks(z, z, pool=3), torch.full((6,), 3))
    t = torch.tensor([[1., 0], [0, 1], [1, 0], [-1, 0]])
    assert torch.equal(retrieval_ranks(t, t), torch.tensor([2, 1, 2, 1]))                 # one tie each for 0 and 2
    # the rule does not depend on candidate order
    p = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(retrieval_ranks(t[p], t[p]), retrieval_ranks(t, t)[p])


@pytest.mark.parametrize('pool', [10, 100, None])
def test_random_predictions_at_baseline(pool):
    # ranks of one draw share their targets, so they are not independent (hubs): many draws, wide dimensions
    g = torch.Generator().manual_seed(3)
    n = 2000
    draws = [retrieval_ranks(torch.randn(n, 64, generator=g), torch.randn(n, 64, generator=g), pool=pool,
                             seed=s) for s in range(6)]
    r = torch.cat(draws)
    N = pool or n
    base = random_baseline(N)
    m = metrics_from_ranks(r)
    for k in (1, 5, 10):
        p = base[f'R@{k}']
        assert abs(m[f'R@{k}'] - p) < 5 * math.sqrt(p * (1 - p) / len(r)) + 1e-12, (k, m, base)
    assert abs(m['MRR'] - base['MRR']) < 5 * (1 / r.double()).std().item() / math.sqrt(len(r))
    # ranks are uniform on 1..N
    assert r.min() >= 1 and r.max() <= N


def test_random_baseline_values():
    b = random_baseline(100)
    assert b['R@1'] == 0.01 and b['R@10'] == 0.1 and math.isclose(b['MRR'], sum(1 / i for i in range(1, 101)) / 100)
    assert random_baseline(5)['R@10'] == 1.0


def test_bad_inputs_say_what_to_do():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match='same shape'): retrieval_metrics(x, x[:5])
    with pytest.raises(ValueError, match='pool=11'): retrieval_metrics(x, x, pool=11)
    with pytest.raises(ValueError, match='NaN'): retrieval_metrics(x * float('nan'), x)


def test_token_sets_are_mean_pooled():
    x = torch.randn(20, 5, 8)
    assert torch.equal(retrieval_ranks(x, x.mean(1)), torch.ones(20, dtype=torch.long))


def test_template_sharing_planted_and_chance():
    g = torch.Generator().manual_seed(4)
    lab = np.arange(400) % 4
    tg = torch.randn(4, 16, generator=g)[lab] * 3 + torch.randn(400, 16, generator=g)
    ts = template_sharing(tg[(np.arange(400) + 4) % 400], tg, lab, k=3)              # a same-label neighbour's future
    assert ts['rate'] > 0.95 and math.isclose(ts['chance'], 99 / 399)
    tr = template_sharing(torch.randn(400, 16, generator=g), tg, lab, k=3)
    assert abs(tr['rate'] - tr['chance']) < 4 * math.sqrt(0.25 * 0.75 / 1200)


def test_falsification_rule_thresholds():
    """The plan's thresholds, not significance: planted effects below them falsify (Δcos 0.012 and top-1 3 % are
    'no better than random' however many clips), one seed above a threshold does not, fewer than 3 seeds is None."""
    low = dict(delta_cos_random=0.012, action_top1=0.03, r1_pool100=0.015)
    assert falsification_verdict([low] * 3)['falsified'] is True
    for k, above in (('delta_cos_random', 0.1), ('action_top1', 0.05), ('r1_pool100', 0.02)):
        v = falsification_verdict([low, low, dict(low, **{k: above})])      # at the threshold: not below it
        assert v['falsified'] is False and k in v['reason']
    v = falsification_verdict([low, low])
    assert v['falsified'] is None and '3+ seeds' in v['reason']
    assert falsification_verdict([low, low, {'delta_cos_random': 0.0}])['falsified'] is None


def test_zeroed_video_with_text_cannot_pass_the_probe():
    """The leak: queries trained with the action text, videos zeroed. A probe on predictions made WITH the text
    names the action (the text carries the label); the rule's figures (made without it) stay at chance."""
    from foresight.models import load_vlm
    from foresight.data import action_world, ACTION_TEMPLATES
    from foresight.queries import query_data, predict
    from foresight.action_probe import train_c3_queries, fit_probe, probe_logits, topk_correct
    from foresight.retrieval import falsification_figures, probe_vs_chance
    torch.set_num_threads(1)
    model, processor = load_vlm('tiny', device='cpu')
    clips = action_world(160, context=2, future=1, size=28, seed=3)
    for c in clips: c.frames[:] = 0                                     # no video: only the text can tell the action
    classes = list(ACTION_TEMPLATES)
    d = query_data(model, processor, clips, offsets=(1,), texts=None)  # each clip's action text after the video
    tr, te = d.subset(range(100)), d.subset(range(100, 160))
    q, _ = train_c3_queries(model, tr, 'suffix', steps=1, lr=1e-2, batch_size=16)
    y = lambda x: torch.tensor([classes.index(l) for l in x.labels])
    pr = fit_probe('linear', predict(q, model, tr), y(tr), len(classes), lr=0.01, wd=1e-4, epochs=60, batch_size=64)
    leaked = topk_correct(probe_logits(pr, predict(q, model, te)), y(te))
    assert probe_vs_chance(leaked, len(classes))['p'] < 0.01            # the planted leak is real
    fig = falsification_figures(q, model, processor, tr, te, classes, seed=0)
    assert probe_vs_chance(fig['per_clip']['action_top1'], len(classes))['p'] > 0.05, fig['action_top1']
    assert fig['action_top1'] < 0.05 + 1 / len(classes)


def test_condition_tests_on_planted_data():
    g = torch.Generator().manual_seed(6)
    fut = torch.randn(150, 16, generator=g)
    assert future_vs_random(fut + 0.5 * torch.randn(150, 16, generator=g), fut)['p'] < 0.01
    assert future_vs_random(torch.randn(150, 16, generator=g), fut)['p'] > 0.01
    assert retrieval_vs_random(torch.ones(150, dtype=torch.long), 100)['p'] < 0.01
    assert not (derangement(50, 3) == torch.arange(50)).any()
