"""E1.6 ablations: grids, baselines, aggregation, the operating point, and a real sweep of a throwaway notebook with
a failing point."""
import json
import pandas as pd, pytest
from foresight.cli import point_name, grid_points, sweep
from foresight.ablations import (
    parse_grid,
    parse_params,
    ablation_points,
    run_quality,
    aggregate,
    recommend,
    toy_project,
    adapter_params_at,
    width_for,
    ABLATIONS,
)


def test_parse_grid_and_params():
    assert parse_grid('layer:1,6,post_merge;resolution=56,112') == {
        'layer': [1, 6, 'post_merge'],
        'resolution': [56, 112],
    }
    assert parse_params('routes:latent,conditioning;lr:0.001;train_transformer=True') == dict(
        routes='latent,conditioning', lr=0.001, train_transformer=True
    )
    with pytest.raises(ValueError, match='unknown ablation'): parse_grid('depth=1')
    with pytest.raises(ValueError, match='empty'): parse_grid(' ; ')
    with pytest.raises(ValueError, match='name:value'): parse_params('epochs')

def test_every_ablation_shares_one_baseline_point():
    base = dict(layer='post_merge', n_images=16, resolution=112)
    names = {f: {point_name(p) for p in grid_points(ablation_points(f, [base[ABLATIONS[f]['param']]], base))}
             for f in ('layer', 'merge', 'data', 'resolution')}
    assert len(set.union(*names.values())) == 1                            # one name: the baseline runs once
    with pytest.raises(ValueError, match='no baseline'): ablation_points('resolution', [56], dict(layer=1))

def test_recommend_prefers_the_cheaper_setting_within_tolerance():
    df = pd.DataFrame(
        [
            dict(ablation='capacity', value=w, LPIPS=l, status='finished')
            for w, l in ((16, 0.42), (64, 0.305), (256, 0.30))
        ]
        + [
            dict(ablation='merge', value='pre_merge', LPIPS=0.29, status='finished'),
            dict(ablation='merge', value='post_merge', LPIPS=0.295, status='finished'),
        ]
    )
    r = recommend(df, tolerance=0.01)
    assert r['capacity']['value'] == 64 and r['capacity']['best_value'] == 256 and 'cheaper' in r['capacity']['why']
    assert r['merge']['value'] == 'post_merge'
    assert recommend(df, tolerance=0.0)['capacity']['value'] == 256

def test_run_quality_reads_both_kinds_of_runs():
    probe = dict(
        metrics={
            'held-out LPIPS': dict(value=0.4, ci=[0.3, 0.5], target='< 0.5', key=True),
            'held-out PSNR (dB)': dict(value=20.0),
        }
    )
    assert run_quality(probe) == dict(LPIPS=0.4, ci=(0.3, 0.5), target='< 0.5', PSNR=20.0, SSIM=None, params=None)
    adapter = dict(
        values=dict(quality=dict(LPIPS=0.25, LPIPS_ci=[0.2, 0.3], PSNR=25.0, SSIM=0.8, params=1234, target='< 0.3'))
    )
    assert run_quality(adapter)['params'] == 1234


def test_sweep_of_two_by_two_with_one_failing_point(tmp_path):
    """A throwaway notebook over a 2×2 grid where a=2, b=y raises: 3 results, 1 failure; a second call re-runs only
    the failure."""
    nbs = toy_project(tmp_path)
    grid = dict(a=[1, 2], b=['x', 'y'])
    out = sweep('toy', grid, root=tmp_path/'reports', nbs=nbs, name='grid')
    assert len(out['results']) == 3 and len(out['failures']) == 1
    assert out['failures'][0]['point'] == dict(a=2, b='y') and 'planted failure' in out['failures'][0]['error']
    got = {
        json.dumps(r['point'], sort_keys=True): r['results']['metrics']['held-out LPIPS']['value']
        for r in out['results']
    }
    assert got == pytest.approx(
        {
            json.dumps(dict(a=1, b='x'), sort_keys=True): 0.1,
            json.dumps(dict(a=1, b='y'), sort_keys=True): 0.15,
            json.dumps(dict(a=2, b='x'), sort_keys=True): 0.2,
        }
    )
    sroot = tmp_path/'reports'/'toy'/'grid'
    assert json.loads((sroot/'sweep.json').read_text())['failures'][0]['point'] == dict(a=2, b='y')
    assert (sroot / 'a=2,b=y.failed').is_dir() and not (sroot / 'toy').exists()  # the failed run kept; no stray folder
    stamps = {r['run']: (tmp_path/r['run']/'results.json').stat().st_mtime_ns for r in out['results']}
    again = sweep('toy', grid, root=tmp_path/'reports', nbs=nbs, name='grid')
    assert (len(again['results']), len(again['failures'])) == (3, 1)
    # skipped
    assert all((tmp_path / r['run'] / 'results.json').stat().st_mtime_ns == stamps[r['run']] for r in again['results'])
    agg = aggregate(
        {
            'data': (
                [1, 2],
                dict(
                    results=[
                        dict(r, point=dict(n_images=r['point']['a'])) for r in out['results'] if r['point']['b'] == 'y'
                    ],
                    failures=[dict(fl, point=dict(n_images=fl['point']['a'])) for fl in out['failures']],
                ),
            )
        }
    )
    assert (
        list(agg.status) == ['finished', 'failed']
        and agg.LPIPS[0] == pytest.approx(0.15)
        and 'planted failure' in agg.error[1]
    )


def test_capacity_widths_at_full_scale():
    "The plan's 1M–50M adapters: the widths found bracket the targets, counted on the meta device."
    for shape in ('query', 'mlp'):
        w1, w50 = width_for(1e6, shape), width_for(50e6, shape)
        assert adapter_params_at(w1 - 8, shape) < 1e6 <= adapter_params_at(w1, shape)
        assert adapter_params_at(w50 - 8, shape) < 50e6 <= adapter_params_at(w50, shape)


def _results(root, exp, run, metrics, values=None, preset='pretrained', date='2026-01-01T00:00:00'):
    d = root/exp/run
    d.mkdir(parents=True)
    (d/'results.json').write_text(json.dumps(dict(status='finished', experiment=exp, run=run, date=date, preset=preset,
                                                  metrics=metrics, values=values or {}, params={})))

def test_c1_decision_in_foresight_report(tmp_path):
    """`foresight report` writes the plan's go/no-go: a result that does not beat its random-weights control does not
    pass."""
    from foresight.cli import report
    ctl = lambda lo, hi: dict(value=0.6, ci=[0.55, 0.65], diff_ci=[lo, hi])
    _results(
        tmp_path,
        'e1_2_probe',
        'a',
        {'held-out LPIPS': dict(value=0.3, key=True, target='< 0.5', verdict='PASS', control=ctl(-0.3, -0.2))},
    )
    _results(
        tmp_path,
        'e1_3_merge',
        'a',
        {'LPIPS gap (post − pre)': dict(value=0.05, key=True, target='< 0.1', verdict='PASS')},
    )
    _results(
        tmp_path,
        'e1_4_spatial',
        'a',
        {'IoU (query, 1 object)': dict(value=0.8, key=True, target='> 0.7', verdict='PASS')},
    )
    _results(
        tmp_path,
        'e1_5_reconstruction',
        'a',
        {'LPIPS (latent/query)': dict(value=0.2, key=True, target='< 0.3', verdict='PASS', control=ctl(-0.02, 0.03))},
        dict(quality=dict(SSIM=0.9, PSNR=27.0)),
    )
    idx = report(tmp_path).read_text()
    assert '## C1 decision (go/no-go)' in idx and '**PIVOT**' in idx and 'not beyond its random-weights control' in idx
    # a newer run that beats its control
    _results(
        tmp_path,
        'e1_5_reconstruction',
        'b',
        {'LPIPS (latent/query)': dict(value=0.2, key=True, target='< 0.3', verdict='PASS', control=ctl(-0.5, -0.3))},
        dict(quality=dict(SSIM=0.9, PSNR=27.0)),
        date='2026-02-01T00:00:00',
    )
    assert '**PROCEED**' in report(tmp_path).read_text()
