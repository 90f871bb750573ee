"Foundation: findings writer, parameter validation, the CLI's notebook resolution and failure modes."
import json, os, subprocess, sys
from pathlib import Path
import pytest
from foresight.findings import (Findings, check_params, ParamError, Int, Float, Str, Ints, Choice, verdict, safe_name,
                                resolve_run_dir)
from foresight import cli

ROOT = Path(__file__).resolve().parents[1]

def test_findings_planted_verdicts(tmp_path):
    f = Findings('q1_alignment', 'Q1', 'Do they align?', dict(layer=24, seed=0),
                 models=dict(vlm='tiny', decoder='tiny'), seed=0, run_dir=tmp_path)
    f.metric('Linear probe R²', 0.510, '> 0.5', 'held-out R²', ci=(0.47, 0.55), null=0.01)
    f.metric('Spearman ρ', 0.684, '> 0.6', 'RSA')
    f.metric('Recall@10', 0.268, '> 20%', 'k-NN overlap')
    f.metric('CKA', 0.687, '> 0.4', 'linear CKA')
    f.write('Yes.')
    res = json.loads((tmp_path/'results.json').read_text())
    md = (tmp_path/'findings.md').read_text()
    assert res['recommendation'] == 'PROCEED' and all(m['verdict'] == 'PASS' for m in res['metrics'].values())
    assert md.splitlines()[0].startswith('**Random-initialised presets') and '**Recommendation**: **PROCEED**' in md
    assert '| Linear probe R² | held-out R² | > 0.5 | 0.510 [0.470, 0.550] (null 0.010) | PASS |' in md
    for k in ['params', 'models', 'preset', 'seed', 'git_commit', 'packages', 'device', 'wall_time_s']: assert k in res
    assert res['preset'] == 'random'

def test_findings_mixed_and_failing(tmp_path):
    f = Findings('x', 'X', 'Q?', {}, models=dict(vlm='Qwen/Qwen2.5-VL-7B-Instruct'), run_dir=tmp_path/'a')
    f.metric('a', 0.2, '> 0.5')
    f.metric('b', 0.9, '> 0.5')
    f.write('Partly.')
    assert json.loads((tmp_path/'a'/'results.json').read_text())['recommendation'] == 'PIVOT'
    assert not (tmp_path/'a'/'findings.md').read_text().startswith('**Random')
    g = Findings('x', 'X', 'Q?', {}, run_dir=tmp_path/'b')
    g.metric('a', 0.2, '> 0.5')
    g.metric('nan', float('nan'), '< 1')
    g.write('No.')
    assert json.loads((tmp_path/'b'/'results.json').read_text())['recommendation'] == 'STOP'

@pytest.mark.parametrize('value,target,want', [(0.51, '> 0.5', 'PASS'), (0.5, '> 0.5', 'FAIL'), (0.5, '>= 0.5', 'PASS'),
                                              (0.29, '< 0.3', 'PASS'), (0.15, '0.1..0.2', 'PASS'),
                                              (0.25, '0.1..0.2', 'FAIL'), (0.21, '> 20%', 'PASS')])
def test_verdict(value, target, want): assert verdict(value, target) == want

def test_verdict_rejects_nonsense():
    with pytest.raises(ValueError, match='not understood'): verdict(1, 'big')

SPEC = dict(layer=Choice(Int(lo=0), 'pre_merge', 'post_merge'), lr=Float(lo=0), layers=Ints(),
            kind=Str('per_token', 'global'))

def test_params_clean_and_coerce():
    assert check_params(dict(layer='24', lr='1e-3', layers='4,-1', kind='global'), set(), SPEC) == dict(layer=24,
            lr=1e-3, layers=(4, -1), kind='global')

@pytest.mark.parametrize('bad,msg',
                         [(dict(layer='notanumber'), "layer='notanumber' is not allowed"), (dict(lr=-1.0), 'lr=-1.0'),
                                     (dict(kind='local'), "one of 'per_token', 'global'"),
                                     (dict(layrs='1'), 'unknown parameter(s): layrs (did you mean layers?)'),
                                     (dict(layers='1,two'), 'layers=')])
def test_params_errors_name_the_parameter(bad, msg):
    g = dict(dict(layer=1, lr=1.0, layers='1', kind='global'), **bad)
    with pytest.raises(ParamError) as e: check_params(g, set(), SPEC)
    assert msg in str(e.value)

def test_run_names_cannot_escape(reports):
    for bad in ['../x', '/abs', 'a/b', '..', '']:
        with pytest.raises(ValueError): safe_name(bad)
    with pytest.raises(ValueError, match='outside'): resolve_run_dir('x', '/etc/x')
    assert resolve_run_dir('x', 'x/ok').is_relative_to(reports)

def _nbs(tmp_path):
    d = tmp_path/'nbs'
    d.mkdir()
    for n in ['00_extraction', '02_e1_2_probe', '07_q1_alignment', '08_e3_1_sanity', '09_e3_2_next_frame']:
        (d/f'{n}.ipynb').write_text('{}')
    return d

@pytest.mark.parametrize('eid,want',
                         [('e1_2', 'e1_2_probe'), ('e1_2_probe', 'e1_2_probe'), ('02', 'e1_2_probe'),
                          ('02_e1_2_probe.ipynb', 'e1_2_probe'),
                                      ('q1', 'q1_alignment'), ('extraction', 'extraction'),
                                      ('e3_2', 'e3_2_next_frame')])
def test_cli_resolves_notebooks(tmp_path, eid, want): assert cli.resolve_experiment(eid, _nbs(tmp_path))[0] == want

def test_cli_unknown_and_ambiguous(tmp_path):
    nbs = _nbs(tmp_path)
    with pytest.raises(cli.CLIError, match='unknown'): cli.resolve_experiment('e9_9', nbs)
    with pytest.raises(cli.CLIError, match='ambiguous'): cli.resolve_experiment('e3', nbs)

def _foresight(*args, env):
    return subprocess.run([str(Path(sys.executable).parent/'foresight'), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)

def test_cli_bad_parameters_fail_fast_and_leave_nothing(reports):
    env = dict(os.environ, FORESIGHT_REPORTS=str(reports))
    r = _foresight('run', 'extraction', '-p', 'unknown_param', '1', env=env)
    assert r.returncode != 0 and 'unknown parameter(s) for extraction: unknown_param' in r.stderr
    r = _foresight('run', 'extraction', '-p', 'size', 'notanumber', '--quiet', env=env)
    assert r.returncode != 0 and "size='notanumber' is not allowed" in r.stderr
    assert not reports.exists() or not any(reports.rglob('*')), list(reports.rglob('*'))

def test_cli_run_and_report(reports):
    env = dict(os.environ, FORESIGHT_REPORTS=str(reports))
    r = _foresight('run', 'extraction', '-p', 'n_clips', '2', '-p', 'resolutions', '56', '--name', 'small', '--quiet',
                   env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    run = reports/'extraction'/'small'
    assert {'findings.md', 'results.json', '00_extraction.ipynb'} <= {p.name for p in run.iterdir()}
    res = json.loads((run/'results.json').read_text())
    assert res['params']['n_clips'] == 2 and res['status'] == 'finished' and res['run'] == 'small'
    (reports/'extraction'/'.broken.partial').mkdir()   # an interrupted run
    r = _foresight('report', env=env)
    assert r.returncode == 0
    idx = (reports/'README.md').read_text()
    assert '[small](extraction/small/findings.md)' in idx and 'interrupted or running' in idx
