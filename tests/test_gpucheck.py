"""The GPU check: its settings match the notebooks, and it tells a pass from every kind of failure (CPU mode, tiny
presets)."""
import json
import nbformat, pytest
from foresight.gpucheck import FULL_SIZE, bad_settings, check, numbered_notebooks

PARAMS = 'mode = "ok"\nrun_dir = ""\n'
CODE = '''
import math
from foresight.findings import Findings, NonFiniteError, check_finite
f = Findings("toy", "Toy", "Does the check tell a pass from a failure?", dict(mode=mode, run_dir=run_dir),
             run_dir=run_dir)
if mode == "nan": check_finite(float("nan"), "training loss at step 3", "lower the learning rate")
f.metric("failed points", 2 if mode == "sweep" else 0, "<= 0", "sweep points whose run failed", fmt="d")
f.metric("LPIPS", 0.3, "< 0.5", "planted")
if mode != "nowrite": f.write("planted")
'''


def toy_nbs(tmp_path, modes):
    nbs = tmp_path/'nbs'
    nbs.mkdir()
    for i, m in enumerate(modes):
        nb = nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell(PARAMS, metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell(CODE),
            ],
            metadata={'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
        )
        nbformat.write(nb, nbs/f'{i:02d}_{m}.ipynb')
    return nbs


def test_full_size_settings_name_every_notebook_and_only_real_parameters():
    assert bad_settings(FULL_SIZE) == []
    assert set(FULL_SIZE) == set(numbered_notebooks()) and len(FULL_SIZE) == 14
    assert bad_settings(dict(FULL_SIZE, **{'02_e1_2_probe': dict(lyr=24)})) == ['02_e1_2_probe: lyr is not a parameter']
    assert bad_settings({k: v for k, v in FULL_SIZE.items() if k != '05_e1_5_reconstruction'}) == \
        ['05_e1_5_reconstruction: no full-size settings']


def test_a_pass_and_three_kinds_of_failure(tmp_path):
    modes = ['ok', 'nan', 'sweep', 'nowrite']
    nbs = toy_nbs(tmp_path, modes)
    settings = {f'{i:02d}_{m}': dict(mode=m) for i, m in enumerate(modes)}
    rec = check(out=tmp_path/'gpu', work=tmp_path/'work', nbs=nbs, settings=settings, jobs=2)   # two processes at once
    by = {e['notebook']: e for e in rec['notebooks']}
    assert [by[k]['passed'] for k in settings] == [True, False, False, False]
    assert 'NonFiniteError' in by['01_nan']['error'] and 'training loss at step 3' in by['01_nan']['error']
    assert 'failed points: 2' in by['02_sweep']['error']
    assert 'results.json' in by['03_nowrite']['error']
    on_disk = json.loads((tmp_path/'gpu'/'cpu.json').read_text())
    assert {'device', 'date', 'commit', 'notebooks'} <= set(on_disk)
    assert all({'notebook', 'params', 'passed', 'seconds', 'peak_gib'} <= set(e) for e in on_disk['notebooks'])
    assert by['00_ok']['params'] == dict(mode='ok') and by['00_ok']['seconds'] > 0
    assert by['00_ok']['peak_gib'] is None                                   # no GPU here; the peak cell ran
    assert (tmp_path/'work'/'00_ok'/'gpu_peak.json').exists() and by['00_ok']['slowest'][0]['seconds'] >= 0
    md = (tmp_path/'gpu'/'cpu.md').read_text()
    assert 'Passed: 1 of 4' in md and '| 00_ok | `mode=ok` | yes |' in md


def test_parts_add_up_and_resume_skips_what_passed(tmp_path):
    modes = ['ok', 'ok', 'nan']
    nbs = toy_nbs(tmp_path, modes)
    settings = {f'{i:02d}_{m}': dict(mode=m) for i, m in enumerate(modes)}
    kw = dict(out=tmp_path/'gpu', work=tmp_path/'work', nbs=nbs, settings=settings)
    check(part='1/2', **kw)
    rec = check(part='2/2', **kw)
    assert [e['notebook'] for e in rec['notebooks']] == list(settings)
    first = {e['notebook']: e['date'] for e in rec['notebooks']}
    rec = check(resume=True, **kw)                                            # only the failure runs again
    again = {e['notebook']: e['date'] for e in rec['notebooks']}
    assert again['00_ok'] == first['00_ok'] and again['01_ok'] == first['01_ok']


def test_a_real_notebook_in_cpu_mode(tmp_path):
    "The check itself on a real experiment notebook with the tiny presets, so it cannot rot."
    rec = check(only='03', cpu=True, out=tmp_path/'gpu', work=tmp_path/'work')
    (e,) = rec['notebooks']
    assert e['notebook'] == '03_e1_3_merge' and e['passed'], e['error']
    assert (tmp_path/'work'/'03_e1_3_merge'/'results.json').exists()


def test_unknown_notebook_is_refused():
    with pytest.raises(SystemExit, match='no notebook matches 99'): check(only='99', cpu=True)
