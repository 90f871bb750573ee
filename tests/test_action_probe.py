"""foresight.action_probe: probes read a planted class signal, sit at chance on shuffled labels, and count
opposite-action confusions."""
import math
import numpy as np, pytest, torch
from foresight.action_probe import (fit_probe, select_probe, probe_logits, topk_correct, confusion_matrix,
                                    opposite_confusions)
from foresight.data import OPPOSITE_ACTIONS, ACTION_TEMPLATES

torch.set_num_threads(1)   # small problems on a shared CPU: contended OpenMP threads are many times slower


def _planted(n=400, K=8, L=4, d=16, strength=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    X = torch.randn(n, L, d, generator=g)
    X[:, min(1, L - 1)] += strength * torch.randn(K, d, generator=g)[y]
    return X, y


@pytest.mark.parametrize('kind', ['linear', 'attentive'])
def test_probe_reads_planted_signal(kind):
    X, y = _planted()
    m = fit_probe(kind, X[:300], y[:300], 8, lr=1e-2, wd=1e-4, epochs=30, batch_size=100)
    assert topk_correct(probe_logits(m, X[300:]), y[300:]).float().mean() > 0.8


@pytest.mark.parametrize('kind', ['linear', 'attentive'])
def test_shuffled_labels_at_chance(kind):
    # the labels carry no information about X: held-out accuracy must be near 1/K (a binomial band)
    X, y = _planted(n=600, K=6, seed=1)
    ys = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(9))]
    m = fit_probe(kind, X[:400], ys[:400], 6, lr=1e-2, wd=1e-4, epochs=20, batch_size=100)
    acc = topk_correct(probe_logits(m, X[400:]), ys[400:]).float().mean().item()
    assert abs(acc - 1 / 6) < 4 * math.sqrt(1 / 6 * 5 / 6 / 200), acc
    # and the same probe with the true labels is far above chance (the check can fail)
    m = fit_probe(kind, X[:400], y[:400], 6, lr=1e-2, wd=1e-4, epochs=20, batch_size=100)
    assert topk_correct(probe_logits(m, X[400:]), y[400:]).float().mean() > 0.6


def test_grid_selects_on_validation():
    X, y = _planted(n=300, seed=2)
    m, grid = select_probe('linear', X[:200], y[:200], X[200:], y[200:], 8, lrs=(1e-5, 1e-2), wds=(1e-4,), epochs=10,
                           batch_size=100)
    assert len(grid) == 2 and [r['selected'] for r in grid] == [False, True]       # lr 1e-5 barely moves in 10 epochs
    assert grid[1]['val_top1'] > grid[0]['val_top1']


def test_attentive_probe_sees_vectors_and_tokens():
    X, y = _planted(n=40, L=1, seed=3)
    for x in (X, X[:, 0]):
        m = fit_probe('attentive', x, y, 8, epochs=1, batch_size=40, depth=2, num_queries=2)
        assert probe_logits(m, x).shape == (40, 8)


def test_topk_and_confusion():
    lg = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    assert topk_correct(lg, [1, 1, 0]).tolist() == [True, False, False]
    assert topk_correct(lg, [1, 1, 0], k=2).tolist() == [True, True, False]
    assert confusion_matrix([1, 1, 0], lg.argmax(1), 3).tolist() == [[0, 0, 1], [1, 1, 0], [0, 0, 0]]


def test_opposite_confusions_planted():
    cls = list(ACTION_TEMPLATES)
    K = len(cls)
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, 5000)
    opp = {cls.index(a): cls.index(b) for a, b in OPPOSITE_ACTIONS} | {cls.index(b): cls.index(a) for a,
                                                                       b in OPPOSITE_ACTIONS}
    to_opp = np.array([opp.get(int(t), (t + 1) % K) for t in y])
    r = opposite_confusions(y, to_opp, cls, OPPOSITE_ACTIONS)
    assert r['rate'] == 1.0 and math.isclose(r['ratio'], K - 1) and r['p'] < 1e-10
    rand = (y + rng.integers(1, K, len(y))) % K                 # errors spread evenly
    r = opposite_confusions(y, rand, cls, OPPOSITE_ACTIONS)
    assert abs(r['rate'] - 1 / (K - 1)) < 0.03 and r['p'] > 1e-3


def test_bad_inputs():
    X, y = _planted(n=20)
    with pytest.raises(ValueError, match='labels must lie'): fit_probe('linear', X, y + 8, 8)
    with pytest.raises(ValueError, match='rows but'): fit_probe('linear', X, y[:5], 8)
    with pytest.raises(ValueError, match='expected'): fit_probe('linear', torch.randn(4, 2, 2, 2), y[:4], 8)


def test_ssv2_layout_clips_classes_and_opposites(tmp_path):
    """Something-Something v2 in its official layout, through the one C3 loader (`queries.load_clips`, split
    'validation') and `action_classes`: clips split by `context`, 174-style vocabulary, opposites by template text,
    broken files skipped."""
    import json
    from foresight.data import action_world, write_video
    from foresight.action_probe import stratified_split
    from foresight.queries import load_clips, action_classes
    root = tmp_path/'ssv2'
    (root/'labels').mkdir(parents=True)
    templates = {'Pushing something from left to right': '0', 'Pushing something from right to left': '1',
                 'Dropping something': '2'}
    (root/'labels'/'labels.json').write_text(json.dumps(templates))
    src = action_world(4, context=4, future=2, size=56, seed=0)
    entries = []
    for i, (c,
            t) in enumerate(zip(src,
                                ['Pushing [something] from left to right',
                                 'Pushing [something] from right to left'] * 2)):
        write_video(root/f'{i}.webm', np.concatenate([c.frames, c.meta['future']]), fps=4)
        entries.append(dict(id=str(i), label=t.replace('[something]', 'a cup'), template=t, placeholders=['a cup']))
    (root/'99.webm').write_bytes(b'not a video')
    entries.append(dict(id='99', label='Dropping a cup', template='Dropping [something]', placeholders=['a cup']))
    (root/'labels'/'validation.json').write_text(json.dumps(entries))
    skipped = []
    clips = load_clips(f'ssv2:{root}', 10, 'validation', context=4, future=1, size=56, skipped=skipped)
    vocab = action_classes(f'ssv2:{root}')
    assert len(clips) == 4 and [s[0] for s in skipped] == ['ssv2-99']
    assert vocab['classes'] == ['0', '1', '2'] and vocab['pairs'] == [('0', '1')]
    assert all(len(c.frames) == 4 and len(c.meta['future']) == 1 and c.label in ('0', '1') for c in clips)
    tr, te = stratified_split([c.label for c in clips], (2, 2))
    assert {clips[i].label for i in tr} == {'0', '1'}


def test_split_keeps_classes_of_a_long_tail():
    """SSv2 is long-tailed: a split must hold every class in proportion (dealt round-robin, the test split held
    only the largest classes' leftovers)."""
    from foresight.action_probe import stratified_split
    labels = np.repeat(np.arange(174), [max(1, 400 // (k + 1)) for k in range(174)])
    n = len(labels)
    sizes = (int(n * 0.7), int(n * 0.15), int(n * 0.15))
    tr, va, te = stratified_split(labels, sizes, seed=1)
    assert sorted(tr + va + te) == sorted(set(tr + va + te)) and [len(s) for s in (tr, va, te)] == list(sizes)
    for k in range(174):
        m = (labels == k).sum()
        if m >= 14: assert (labels[te] == k).sum() >= 1 and (labels[va] == k).sum() >= 1, k
        assert abs((labels[tr] == k).sum() - 0.7 * m) <= 2, k                 # proportional, up to rounding
    assert len(set(labels[te])) > 60
