"foresight.viz: embeddings, clustering numbers and the similarity-distance relation on planted data."
import numpy as np, pytest, torch
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from foresight.viz import (embed_2d, silhouette, silhouette_per_label, knn_accuracy, chance_accuracy, cluster_stats,
                           spatial_similarity, grid_distances, token_table, subsample, position_bins, position_colors,
                           scatter_by_category, scatter_by_position, scatter_by_frame)


def blobs(k=3, n=30, d=64, sep=6.0, seed=0):
    r = np.random.default_rng(seed)
    X = np.concatenate([r.normal(size=(n, d)) + sep * r.normal(size=(1, d)) for _ in range(k)])
    return X, np.repeat([f'c{i}' for i in range(k)], n)


def smooth_grid(h=8, w=8, c=32, noise=0.1, seed=0):
    "Tokens that are a smooth function of grid position (under half a sine cycle across the grid)."
    g = np.random.default_rng(seed)
    r, cc = np.mgrid[0:h, 0:w] / max(h, w)
    f = g.uniform(0.25, 0.5, (c, 2)) * g.choice([-1, 1], (c, 2))
    ph = g.uniform(0, 2 * np.pi, c)
    x = np.sin(2 * np.pi * (f[:, 0] * r[..., None] + f[:, 1] * cc[..., None]) + ph)
    return (x + noise * g.normal(size=x.shape))[None]


@pytest.mark.parametrize('method', ['tsne', 'pca'])
def test_embedding_seeded_and_separates_blobs(method):
    X, y = blobs()
    e = embed_2d(X, method, seed=3)
    assert e.shape == (90, 2) and np.array_equal(e, embed_2d(X, method, seed=3))
    assert knn_accuracy(e, y, k=5) > 0.95              # the blobs stay apart in 2-D


@pytest.mark.slow
def test_umap_seeded():
    X, y = blobs()
    e = embed_2d(X, 'umap', seed=1)
    assert np.array_equal(e, embed_2d(X, 'umap', seed=1)) and knn_accuracy(e, y) > 0.95


def test_silhouette_and_knn_planted():
    X, y = blobs()
    assert silhouette(X, y) > 0.5 and knn_accuracy(X, y) == 1.0 and chance_accuracy(y) == pytest.approx(1 / 3)
    ys = np.random.default_rng(1).permutation(y)
    assert abs(silhouette(X, ys)) < 0.1 and knn_accuracy(X, ys) < 0.6
    per = silhouette_per_label(X, y)
    assert set(per) == {'c0', 'c1', 'c2'} and min(per.values()) > 0.5
    s = cluster_stats(X, y, n_boot=200, n_null=5)
    assert s['knn_ci'][0] <= 1.0 and s['silhouette_ci'][0] < s['silhouette'] < s['silhouette_ci'][1]
    assert abs(s['knn_null'] - 1 / 3) < 0.2 and s['n_labels'] == 3


def test_knn_groups_stop_twin_leakage():
    r = np.random.default_rng(2)
    X = np.repeat(r.normal(size=(40, 8)), 2, axis=0)
    y = np.repeat(r.choice(['a', 'b'], 40), 2)
    g = np.repeat(np.arange(40), 2)
    assert knn_accuracy(X, y, k=1) > 0.8                 # the twin sits in the training folds
    assert knn_accuracy(X, y, k=1, groups=g) < 0.7       # not when groups keep twins together


def test_spatial_similarity_planted():
    sm = spatial_similarity([smooth_grid(seed=i) for i in range(4)])
    assert sm['spearman'] < -0.5 and sm['adjacent'] > sm['distant'] + 0.5 and sm['n_slices'] == 4
    rn = spatial_similarity([np.random.default_rng(i).normal(size=(2, 8, 8, 32)) for i in range(4)])
    assert abs(rn['spearman']) < 0.1 and abs(rn['gap']) < 0.1 and rn['n_slices'] == 8
    assert list(sm['by_distance'])[0] == 1 and sm['by_distance'][1] > sm['by_distance'][max(sm['by_distance'])]
    assert spatial_similarity(torch.tensor(smooth_grid()[0]))['n_slices'] == 1      # one (H, W, C) image
    with pytest.raises(ValueError, match='expected latent grids'): spatial_similarity(np.zeros((2, 2, 2, 2, 2)))


def test_grid_distances_and_token_table():
    D = grid_distances(2, 3)
    assert np.allclose(D[0], [0, 1, 2, 1, np.sqrt(2), np.sqrt(5)]) and np.allclose(D, D.T)
    t = token_table([np.zeros((2, 4, 4, 3)), np.ones((1, 2, 2, 3))], items=['clip', 'image'])
    assert t['tokens'].shape == (36, 3) and t['label'][-1] == 'image' and t['frame'].max() == 1
    assert t['row'][5] == 1 and t['col'][5] == 1                 # row-major order
    assert position_bins(t, 2)[:4].tolist() == ['0,0', '0,0', '0,1', '0,1']
    s = subsample(t, 10, seed=0)
    keys = list(zip(s['item'], s['frame'], s['row'], s['col']))
    assert len(s['tokens']) == 10 and keys == sorted(keys)           # a subsample keeps the original order


def test_plots_draw():
    X, y = blobs()
    e = embed_2d(X, 'pca')
    t = token_table([np.random.default_rng(0).normal(size=(2, 4, 4, 8))])
    te = embed_2d(t['tokens'], 'pca')
    fig, axs = plt.subplots(1, 3)
    scatter_by_category(axs[0], e, y)
    scatter_by_position(axs[1], te, t['row'], t['col'], t['height'], t['width'])
    scatter_by_frame(axs[2], te, t['frame'])
    assert len(axs[0].collections) == 3 and len(axs[0].get_legend().get_texts()) == 3
    plt.close(fig)
    c = position_colors([0, 3], [0, 3], 4, 4)
    assert np.allclose(c[0, :2], 0.15) and np.allclose(c[1, :2], 0.95)


def test_bad_inputs_name_the_problem():
    X, y = blobs()
    with pytest.raises(ValueError, match='use one of tsne, umap, pca'): embed_2d(X, 'mds')
    with pytest.raises(ValueError, match='2..n-1 distinct labels'): silhouette(X, ['a'] * 90)
    with pytest.raises(ValueError, match='10 labels for 90 samples'): knn_accuracy(X, y[:10])
    with pytest.raises(ValueError, match='flatten each sample'): silhouette(np.zeros((4, 2, 2)), [0, 1, 0, 1])
