"""The researcher's workflow (issue 19): config files, training curves as TensorBoard events, --dry-run,
parallel sweeps through submitit."""
import json, os, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT/'configs').glob('*.yaml'))


# ---------------------------------------------------------------- configs
def test_configs_cover_every_experiment():
    from foresight.cli import notebooks, config_experiment
    covered = {config_experiment(f) for f in CONFIGS}
    assert covered == set(notebooks()), f"experiments without a config: {set(notebooks()) - covered}"

@pytest.mark.parametrize('cfg', CONFIGS, ids=[f.name for f in CONFIGS])
def test_config_matches_notebook_parameters(cfg):
    "Every key is a parameter of its notebook, and the notebook's own checks accept every value."
    from foresight.cli import config_experiment, resolve_experiment, check_values, load_config, param_defaults
    nb = resolve_experiment(config_experiment(cfg))[1]
    params = load_config(cfg)
    assert params and set(params) <= set(param_defaults(nb))
    assert 'run_dir' not in params          # a config names settings, never where one run goes
    check_values(nb, params)

def test_config_values_from_the_plans():
    from foresight.cli import load_config
    c = load_config(ROOT/'configs'/'e3_2_ssv2.yaml')
    assert (c['context'], c['size'], c['n_queries'], c['lr'], c['steps'], c['warmup']) == (16, 224, 32, 1e-4, 50000,
            500)
    assert load_config(ROOT/'configs'/'e3_4_ssv2.yaml')['horizons'] == '1,3,5,8,10'
    assert load_config(ROOT/'configs'/'q1_default.yaml')['n_samples'] == 450

def test_bad_config_fails_before_anything_starts(tmp_path, reports, capsys):
    from foresight.cli import main
    bad = tmp_path/'e3_2_bad.yaml'
    bad.write_text('stpes: 3\n')
    assert main(['run', 'e3_2', '-f', str(bad)]) == 2
    assert 'did you mean steps' in capsys.readouterr().err and not reports.exists()
    bad.write_text('size: 50\n')             # a value the notebook refuses: caught by --dry-run without a kernel
    assert main(['run', 'e3_2', '-f', str(bad), '--dry-run']) == 2 and 'size' in capsys.readouterr().err
    other = tmp_path/'e1_2_x.yaml'
    other.write_text('lr: 0.1\n')
    assert main(['run', 'e3_2', '-f', str(other), '--dry-run']) == 2 and 'is for e1_2_probe' in capsys.readouterr().err

def test_flags_override_the_file(reports, capsys):
    from foresight.cli import main
    assert main(['run', 'e3_2', '-f', str(ROOT/'configs'/'e3_2_ssv2.yaml'), '-p', 'steps', '100', '--dry-run']) == 0
    out = capsys.readouterr().out
    assert 'steps = 100' in out and 'context = 16' in out and 'lr = 0.0001' in out

def test_papermill_reads_a_config(tmp_path):
    "`papermill nb out -f configs/…` injects the file's values (prepared, not executed)."
    import papermill as pm, yaml
    cfg = ROOT/'configs'/'e3_2_ssv2.yaml'
    out = tmp_path/'out.ipynb'
    pm.execute_notebook(str(ROOT/'nbs'/'09_e3_2_next_frame.ipynb'), str(out),
                        parameters=yaml.safe_load(cfg.read_text()),
                        prepare_only=True, kernel_name='python3')
    nb = json.loads(out.read_text())
    injected = next(''.join(c['source']) for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', []))
    assert 'context = 16' in injected and 'n_queries = 32' in injected


# ---------------------------------------------------------------- dry run
def test_dry_run_estimates_and_starts_nothing(reports, capsys, monkeypatch):
    import papermill, foresight.models, foresight.cli as cli
    def boom(*a, **k): raise AssertionError('--dry-run started something')
    monkeypatch.setattr(papermill, 'execute_notebook', boom)
    monkeypatch.setattr(foresight.models, 'load_vlm', boom)
    monkeypatch.setattr(cli, 'run_experiment', boom)
    t0 = time.time()
    assert cli.main(['run', 'e3_2', '-f', str(ROOT/'configs'/'e3_2_ssv2.yaml'), '--dry-run']) == 0
    out = capsys.readouterr().out
    assert time.time() - t0 < 20
    assert 'GPU time' in out and 'disk' in out and 'clips:  174913' in out
    assert 'ssv2:/data/something-something-v2' in out
    assert not reports.exists()                  # no run folder, no cache
    assert 'vision tower' in out and 'query training through the LLM (prefix)' in out

def test_estimate_scales_with_the_work():
    "Twice the clips, twice the extraction time; the rates come from reports/bench."
    from foresight.cli import bench_rates, estimate, check_values, resolve_experiment
    nb = resolve_experiment('e3_2')[1]
    r = bench_rates()
    P = check_values(nb, dict(vlm='random:7b', context=16, size=224, n_train=1000, n_val=1000, n_test=1000))
    Q = check_values(nb, dict(vlm='random:7b', context=16, size=224, n_train=2000, n_val=2000, n_test=2000))
    a, b = estimate('e3_2_next_frame', P, r), estimate('e3_2_next_frame', Q, r)
    k = 'vision tower, every frame once'
    assert b['parts'][k][0] == pytest.approx(2 * a['parts'][k][0]) and b['disk_bytes'] == 2 * a['disk_bytes']
    assert a['parts'][k][0] == pytest.approx(3000 * 9 * 256 / r['vision_clip'][0])   # train + val + test clips


# ---------------------------------------------------------------- training curves
def _tiny_loop(run_dir, backend):
    import torch
    from foresight.tracking import TrainLog
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    y = x @ torch.tensor([1., 2., -1.])
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)
    losses = {}
    with TrainLog(run_dir, 'probe', batch_size=32, tensorboard=backend, wandb=False) as log:
        for step in log.bar(range(40), disable=True):
            loss = ((x @ w - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step % 4 == 0:
                log.scalars(step, loss=loss, lr=sched.get_last_lr()[0])
                losses[step] = loss.item()
        log.scalars(40, val_mse=((x @ w - y) ** 2).mean())
    return log, losses

@pytest.mark.parametrize('backend', ['auto', 'builtin'])
def test_training_loop_leaves_tensorboard_events(tmp_path, backend):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log, losses = _tiny_loop(tmp_path, backend)
    assert backend == 'builtin' or log.backend == 'torch'
    files = list((tmp_path/'tensorboard'/'probe').glob('events.out.tfevents.*'))
    assert len(files) == 1
    acc = EventAccumulator(str(tmp_path/'tensorboard'/'probe'))
    acc.Reload()
    tags = set(acc.Tags()['scalars'])
    assert {'loss', 'lr', 'val_mse', 'throughput/steps_per_s', 'throughput/items_per_s'} <= tags
    got = {e.step: e.value for e in acc.Scalars('loss')}
    assert list(got) == list(losses) and all(got[s] == pytest.approx(losses[s], rel=1e-6) for s in got)
    assert [e.value for e in acc.Scalars('lr')][:4] == pytest.approx([0.1, 0.1, 0.1, 0.05])
    assert got[36] < got[0] / 10                  # the loop learned: the curve goes down

def test_curves_figure_in_findings(tmp_path, monkeypatch):
    monkeypatch.setenv('FORESIGHT_REPORTS', str(tmp_path))
    from foresight.findings import Findings
    f = Findings('demo', 'Demo', 'q?', run_dir=str(tmp_path/'run'))
    log, _ = _tiny_loop(f.run_dir, 'builtin')
    fig = log.figure(f)
    assert (f.run_dir/'figures'/'curves_probe.png').exists() and [a.get_title() for a in fig.axes] == \
        ['loss', 'validation', 'learning rate', 'throughput']

def test_nothing_breaks_without_tensorboard_or_wandb(tmp_path, monkeypatch):
    "Neither installed: the built-in writer still leaves event files, and WANDB_PROJECT only warns."
    import builtins
    real = builtins.__import__
    def no_tb(name, *a, **k):
        if name.split('.')[0] in ('tensorboard', 'tensorboardX', 'wandb') or name == 'torch.utils.tensorboard':
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, '__import__', no_tb)
    monkeypatch.setenv('WANDB_PROJECT', 'p')
    from foresight.tracking import TrainLog
    with pytest.warns(UserWarning, match='wandb is not installed'):
        log = TrainLog(tmp_path, 'x')
    log.scalars(0, loss=1.0)
    log.close()
    assert log.backend == 'builtin' and list((tmp_path/'tensorboard'/'x').glob('events.out.tfevents.*'))


# ---------------------------------------------------------------- sweeps through submitit
TINY = ['-p', 'n_train', '8', '-p', 'n_val', '4', '-p', 'eval_every', '3', '-p', 'warmup', '1', '-p', 'batch_size', '4']

@pytest.mark.slow
def test_local_executor_sweep_matches_sequential(tmp_path, monkeypatch):
    """(About 110 s on a 2-core CPU: four tiny E3.2 runs, each mostly kernel start-up.) Two points on two fake devices
    through submitit's local executor: one point per device, the same
    folder layout and the same results as the sequential sweep, and `foresight report` lists both."""
    pytest.importorskip('submitit')
    from foresight.cli import main, collect_runs
    from foresight.findings import diff_results
    seq, par = tmp_path/'seq', tmp_path/'par'
    t0 = time.time()
    monkeypatch.setenv('FORESIGHT_REPORTS', str(seq))
    assert main(['sweep', 'e3_2', '-g', 'steps=2,3', '--name', 's', *TINY]) == 0
    t1 = time.time()
    monkeypatch.setenv('FORESIGHT_REPORTS', str(par))
    assert main(['sweep', 'e3_2', '-g', 'steps=2,3', '--name', 's', '--gpus', '0,1', '--launcher', 'local', *TINY]) == 0
    t2 = time.time()
    print(f'sequential {t1 - t0:.0f}s, local executor on two fake devices {t2 - t1:.0f}s')
    a = json.loads((seq/'e3_2_next_frame'/'s'/'sweep.json').read_text())
    b = json.loads((par/'e3_2_next_frame'/'s'/'sweep.json').read_text())
    assert not a['failures'] and not b['failures'] and len(b['results']) == 2
    assert sorted(b['devices'].values()) == ['0', '1']                   # one point per device
    for ra, rb in zip(a['results'], b['results']):
        assert ra['point'] == rb['point'] and Path(rb['run']).relative_to(par) == Path(ra['run']).relative_to(seq)
        assert diff_results(ra['results'], rb['results']) == []
    assert sorted(r['path'] for r in collect_runs(par)['finished']) == ['e3_2_next_frame/s/steps=2',
                                                                        'e3_2_next_frame/s/steps=3']
    # resumable as today: a second call finds both points finished and runs nothing
    t3 = time.time()
    assert main(['sweep', 'e3_2', '-g', 'steps=2,3', '--name', 's', '--gpus', '0,1', *TINY]) == 0
    assert time.time() - t3 < 15
    assert json.loads((par/'e3_2_next_frame'/'s'/'sweep.json').read_text())['devices'] == {}

def test_slurm_launcher_submits_a_job_array(tmp_path, monkeypatch, reports):
    "The Slurm path builds one job array through submitit with one GPU per point (submitit stubbed: no cluster here)."
    submitit = pytest.importorskip('submitit')
    from foresight.cli import main
    seen = {}
    class Job:
        def __init__(self, i): self.job_id = f'42_{i}'
        def result(self): return dict(error='stub: not run')
        def cancel(self, check=True): pass
    class Exec:
        def __init__(self, folder, cluster): seen.update(folder=folder, cluster=cluster)
        def update_parameters(self, **kw): seen.update(kw)
        def map_array(self, fn, specs):
            seen['specs'] = specs
            return [Job(i) for i in range(len(specs))]
    monkeypatch.setattr(submitit, 'AutoExecutor', Exec)
    assert main(['sweep', 'e3_2', '-g', 'steps=2,3', '--launcher', 'slurm', '--slurm', 'partition=gpu', '--name',
                 's']) == 1
    assert seen['cluster'] == 'slurm' and seen['gpus_per_node'] == 1 and seen['slurm_partition'] == 'gpu'
    assert seen['slurm_array_parallelism'] == 2 and [s['params']['steps'] for s in seen['specs']] == [2, 3]
    assert Path(seen['folder']) == reports/'e3_2_next_frame'/'s'/'.submitit'
    sw = json.loads((reports/'e3_2_next_frame'/'s'/'sweep.json').read_text())
    assert [f['error'] for f in sw['failures']] == ['stub: not run'] * 2

def test_gpus_need_a_parallel_launcher(reports, capsys):
    from foresight.cli import main
    assert main(['sweep', 'e3_2', '-g', 'steps=2', '--gpus', '0,1', '--launcher', 'inline']) == 2
    assert main(['sweep', 'e3_2', '-g', 'steps=2', '--gpus', 'a']) == 2
    assert not reports.exists()

def test_slurm_parameters_are_submitits(tmp_path, monkeypatch):
    """The real SlurmExecutor accepts the array's parameters and writes them into the sbatch script (a stand-in srun on
    PATH)."""
    submitit = pytest.importorskip('submitit')
    from foresight.cli import slurm_parameters
    (tmp_path/'bin').mkdir()
    srun = tmp_path/'bin'/'srun'
    srun.write_text('#!/bin/sh\nexit 0\n')
    srun.chmod(0o755)
    monkeypatch.setenv('PATH', f"{tmp_path/'bin'}{os.pathsep}{os.environ['PATH']}")
    ex = submitit.AutoExecutor(folder=tmp_path/'sub', cluster='slurm')
    ex.update_parameters(**slurm_parameters(4, 90, dict(partition='gpu', cpus_per_task=8)))
    script = ex._executor._make_submission_file_text('python -m x', 'uid')
    for line in ('--gpus-per-node=1', '--partition=gpu', '--cpus-per-task=8', '--time=90', '--ntasks-per-node=1'):
        assert f'#SBATCH {line}' in script
    assert ex._executor.parameters['array_parallelism'] == 4

def test_slurm_without_a_cluster_is_a_clear_error(reports, capsys, monkeypatch):
    pytest.importorskip('submitit')
    import shutil
    from foresight.cli import main
    if shutil.which('srun'): pytest.skip('this machine has Slurm')
    assert main(['sweep', 'e3_2', '-g', 'steps=2', '--launcher', 'slurm', '--name', 's']) == 2
    assert 'needs a Slurm cluster' in capsys.readouterr().err


def test_a_tiny_training_notebook_leaves_tensorboard_events(tmp_path):
    "E1.2 on the tiny preset: its probe's loss curve is in the run folder as TensorBoard events and in the report."
    from foresight.cli import run_experiment
    from foresight.tracking import read_scalars
    run = run_experiment('e1_2', dict(n_images=10, epochs=3, control=False), name='tb', root=tmp_path, quiet=True)
    (logdir,) = (run/'tensorboard').iterdir()
    sc = read_scalars(logdir)
    assert 'train_loss' in sc or 'loss' in sc, sorted(sc)
    assert len(next(iter(sc.values()))) == 4                       # the ridge start (epoch 0) and 3 epochs
    assert f'curves_{logdir.name}' in (run/'findings.md').read_text()

def test_a_tiny_c3_notebook_leaves_tensorboard_events(tmp_path):
    """E3.2 on the tiny preset: the query training's curves are in the run folder as TensorBoard events and in the
    report."""
    from foresight.cli import run_experiment
    from foresight.tracking import read_scalars
    run = run_experiment('e3_2', dict(n_train=8, n_val=4, steps=3, eval_every=1, warmup=1, batch_size=4), name='tb',
                         root=tmp_path,
                         quiet=True)
    sc = read_scalars(run/'tensorboard'/'queries')
    assert {'train_loss', 'val_cos', 'lr'} <= set(sc), sorted(sc)
    assert [s for s, _ in sc['train_loss']] == [1, 2, 3]                 # one row per evaluation (every step here)
    assert 'curves_queries' in (run/'findings.md').read_text()
