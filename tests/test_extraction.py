"Extraction at dataset scale: the script, rank sharding into one cache, and the benchmark's CPU mode."
import os, subprocess, sys, json
from pathlib import Path
import torch
from foresight.data import moving_digits, write_video
from foresight.extraction import LatentCache

ROOT = Path(__file__).resolve().parents[1]

def _videos(d, n=4):
    for c in moving_digits(n, frames=4, size=56): write_video(d/c.label/f'{c.id}.mp4', c.frames, fps=8)
    return d

def _extract(videos, out, env=None, launch=(), extra=()):
    return subprocess.run([sys.executable, *launch, str(ROOT/'scripts'/'extract.py'), '--dataset', str(videos),
                           '--size', '56', '--frames', '4',
                           '--batch-size', '2', '--workers', '0', '--shard-size', '1', '--out', str(out), *extra],
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})), timeout=300)

def test_two_ranks_fill_one_cache_like_one_process(tmp_path):
    v = _videos(tmp_path/'v')
    one = _extract(v, tmp_path/'one')
    assert one.returncode == 0, one.stderr[-2000:]
    for r in range(2):
        p = _extract(v, tmp_path/'two', dict(RANK=str(r), WORLD_SIZE='2'))
        assert p.returncode == 0, p.stderr[-2000:]
    a, b = LatentCache(tmp_path/'one'), LatentCache(tmp_path/'two')
    assert a.complete and b.complete and sorted(a.ids()) == sorted(b.ids()) and len(a) == 4
    la, lb = a.load(), b.load()
    assert all(torch.equal(la[k], lb[k]) for k in la)
    assert len(list((tmp_path/'two').glob('manifest-rank*-of-2.json'))) == 2

SLOW_RANK_1 = """
import os, time
if os.environ.get('RANK') == '1':
    import foresight.extraction as e
    _shard = e._ShardWriter._shard
    def slow(self, *a, **k):
        time.sleep(3)
        return _shard(self, *a, **k)
    e._ShardWriter._shard = slow
"""

def test_torchrun_two_ranks_equal_one_process_and_report_the_merged_manifest(tmp_path):
    """`torchrun --nproc_per_node 2 scripts/extract.py` (gloo on the CPU): the same latents as one process, bf16 by
    default, and rank 0 reports the merged manifest of both ranks once both are done (complete, every clip)."""
    v = _videos(tmp_path/'v')
    one = _extract(v, tmp_path/'one', extra=['--report', str(tmp_path/'one.json')])
    assert one.returncode == 0, one.stderr[-2000:]
    port = str(29600 + os.getpid() % 1000)
    # rank 1 writes its shards 3 s late: without the barrier rank 0 would report before they exist
    hook = tmp_path/'hook'
    hook.mkdir()
    (hook/'sitecustomize.py').write_text(SLOW_RANK_1)
    two = _extract(v, tmp_path/'two', dict(OMP_NUM_THREADS='1', PYTHONPATH=f"{hook}{os.pathsep}{ROOT}"),
                   launch=('-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', port),
                   extra=['--report', str(tmp_path/'two.json')])
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = LatentCache(tmp_path/'one').load(), LatentCache(tmp_path/'two').load()
    assert sorted(a) == sorted(b) and len(a) == 4 and all(torch.equal(a[k], b[k]) for k in a)
    assert {t.dtype for t in b.values()} == {torch.bfloat16}
    r1, r2 = (json.loads((tmp_path/f).read_text()) for f in ('one.json', 'two.json'))
    assert (r1['clips'], r1['complete'], r1['world']) == (4, True, 1)
    assert (r2['clips'], r2['complete'], r2['world']) == (4, True, 2), r2
    assert '4 clips cached over 2 rank(s), 0 skipped; complete=True' in two.stdout
    assert r2['meta']['dtype'] == 'bfloat16' and r2['meta']['pool'] == 'none'

def test_benchmark_tiny_mode_runs(tmp_path):
    "The benchmark's CPU mode, so that it cannot rot: it must run and pass its correctness check."
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'extraction.py'), '--tiny', '--parts', 'vision,llm,vae',
                        '--out', str(tmp_path),
                        '--workers', '0', '--e2e-batches', '1', '--reps', '1', '--videos', ''], capture_output=True,
                        text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path/'tiny-cpu.json').read_text())
    assert res['correctness']['pass'] and res['vision'] and res['llm'] and res['vae']
    assert (tmp_path/'tiny-cpu.md').read_text().startswith('# Extraction benchmark')

def test_dataset_benchmark_tiny_mode_times_the_user_command(tmp_path):
    """benchmarks/dataset.py in its CPU mode: it runs scripts/extract.py itself (the `path` it records is that
    command) and writes the `dataset` list with the keys the README's table and the issue name."""
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'dataset.py'), '--tiny', '--clips', '8', '--gpus', '1',
                        '--workloads', 'clips224',
                        '--workers', '0', '--shard-size', '2', '--data', str(tmp_path/'d'), '--out', str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path/'tiny-cpu.json').read_text())
    (row,) = res['dataset']
    assert {'workload', 'path', 'gpus', 'clips_per_s', 'tokens_per_s', 'mfu', 'scaling'} <= set(row)
    assert row['path'].startswith('scripts/extract.py') and row['gpus'] == 1 and row['scaling'] == 1.0
    assert row['clips'] == 8 and row['clips_per_s'] > 0 and row['dtype'] == 'bfloat16'
    assert (tmp_path/'tiny-cpu-dataset.md').read_text().startswith('# Dataset extraction')
