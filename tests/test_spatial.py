"E1.4 spatial probe: box IoU, Hungarian matching and the position heads, on hand cases and planted latents."
import math
import numpy as np, pytest, torch
from foresight.spatial import (box_iou, generalized_box_iou, match_boxes, box_errors, evaluate_boxes, set_loss,
                               cxcywh_to_xyxy, xyxy_to_cxcywh, make_head, train_head, predict_boxes, planted_latents)


@pytest.mark.parametrize('a, b, iou', [
    ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),            # identical
    ([0, 0, .5, 1], [0, 0, 1, 1], 0.5),           # half of the other
    ([0, 0, .2, .1], [.1, 0, .3, .1], 1 / 3),     # overlap of one third of the union
    ([0, 0, .5, .5], [0, 0, 1, 1], 0.25),         # contained
    ([0, 0, .1, .1], [.1, .1, .2, .2], 0.0),      # touching corners
    ([0, 0, .1, .1], [.5, .5, .6, .6], 0.0),      # disjoint
])
def test_box_iou_hand_cases(a, b, iou):
    assert box_iou([a], [b]).item() == pytest.approx(iou, abs=1e-6)
    assert box_iou([b], [a]).item() == pytest.approx(iou, abs=1e-6)      # symmetric

def test_box_iou_is_pairwise_and_batched():
    a = torch.tensor([[0, 0, 1, 1], [0, 0, .5, .5]])
    b = torch.tensor([[0, 0, .5, .5], [.5, .5, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_allclose(box_iou(a, b).numpy(), [[.25, .25, 1], [1, 0, .25]], atol=1e-6)
    assert box_iou(torch.rand(4, 2, 4), torch.rand(4, 3, 4)).shape == (4, 2, 3)
    with pytest.raises(ValueError, match='4 coordinates'): box_iou([[0, 0, 1]], [[0, 0, 1, 1]])

def test_generalized_iou():
    # disjoint boxes 0.1 wide, 0.1 apart: IoU 0, enclosing box 0.3 × 0.1, union 0.02 → GIoU = -(0.03 - 0.02)/0.03
    assert generalized_box_iou([[0, 0, .1, .1]], [[.2, 0, .3, .1]]).item() == pytest.approx(-1 / 3, abs=1e-6)
    assert generalized_box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]]).item() == pytest.approx(1.0)

def test_box_conversions_round_trip():
    b = torch.tensor([[.1, .2, .5, .9]])
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    torch.testing.assert_close(xyxy_to_cxcywh(b), torch.tensor([[.3, .55, .4, .7]]))

def test_hungarian_recovers_a_permutation():
    true = np.array([[0, 0, .2, .2], [.5, .5, .9, .9], [.1, .6, .3, .8], [.6, 0, .9, .3]])
    perm = [2, 0, 3, 1]
    pred = true[perm] + 0.01                                  # shuffled and nudged
    r, c = match_boxes(pred, true)
    assert dict(zip(r.tolist(), c.tolist())) == {i: p for i, p in enumerate(perm)}

def test_hungarian_maximises_total_iou_not_greedy():
    # taken greedily, prediction 0 grabs truth 0 (IoU 0.78) and leaves prediction 1 with truth 1 (0.33): total 1.11;
    # the optimum gives truth 0 to prediction 1 (IoU 1) and truth 1 to prediction 0 (0.45): total 1.45
    true = np.array([[0, 0, .4, .4], [.2, 0, .6, .4]])
    pred = np.array([[.05, 0, .45, .4], [0, 0, .4, .4]])
    iou = box_iou(pred, true).numpy()
    assert iou[0, 0] > iou[0, 1] and iou[0, 0] + iou[1, 1] < iou[0, 1] + iou[1, 0]      # the planted trap
    r, c = match_boxes(pred, true)
    assert dict(zip(r.tolist(), c.tolist())) == {0: 1, 1: 0}

def test_hungarian_with_unequal_counts_and_misses():
    true = [[0, 0, .2, .2], [.5, .5, .9, .9], [.1, .6, .3, .8]]
    r, c = match_boxes([[.5, .5, .9, .9]], true)
    assert (r.tolist(), c.tolist()) == ([0], [1])
    e = box_errors([[.5, .5, .9, .9]], true)
    np.testing.assert_allclose(e['iou'], [0, 1, 0])
    assert e['matched'].tolist() == [False, True, False]
    assert np.isnan(e['centre'][0]) and e['centre'][1] == pytest.approx(0)

def test_box_errors_centre_and_size():
    e = box_errors([[.1, .1, .3, .5]], [[0, 0, .2, .4]])      # same size, shifted by (0.1, 0.1)
    assert e['centre'][0] == pytest.approx(math.hypot(.1, .1))
    assert e['size'][0] == pytest.approx(0, abs=1e-6)
    e = box_errors([[0, 0, .3, .4]], [[0, 0, .2, .4]])        # width 50 % too large, height right
    assert e['size'][0] == pytest.approx(0.25)
    ev = evaluate_boxes([[[0, 0, 1, 1]], [[0, 0, .5, .5]]], [[[0, 0, 1, 1]], [[0, 0, 1, 1]]])
    np.testing.assert_allclose(ev['iou'], [1, .25])
    assert ev['image'].tolist() == [0, 1]

def test_set_loss_is_zero_for_a_permuted_perfect_prediction():
    t = cxcywh_to_xyxy(torch.tensor([[[.3, .3, .2, .2], [.7, .6, .3, .1], [.2, .8, .1, .2]]]))
    assert set_loss(t[:, [2, 0, 1]], t).item() == pytest.approx(0, abs=1e-6)
    assert set_loss(t[:, [2, 0, 1]] + 0.05, t).item() > 0.1

def test_spatial_heads_localise_where_mean_pooling_cannot():
    z, b = planted_latents(192, k=1, seed=4)
    iou = {}
    for kind in ('mlp', 'token'):
        h = train_head(make_head(kind, 16, 1, 32), z[:160], b[:160], epochs=40, lr=5e-3)
        iou[kind] = evaluate_boxes(predict_boxes(h, z[160:]), b[160:])['iou'].mean()
    assert iou['token'] > 0.6 and iou['mlp'] < 0.35, iou

def test_heads_reject_wrong_inputs():
    with pytest.raises(ValueError, match='dim=96'): make_head('query', 64)(torch.randn(2, 4, 4, 96))
    with pytest.raises(ValueError, match='k=2'):
        train_head(make_head('mlp', 16, 1), torch.randn(4, 2, 2, 16), torch.rand(4, 2, 4), epochs=1)
