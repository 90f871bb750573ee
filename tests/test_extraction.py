"Extraction at dataset scale: the script, rank sharding into one cache, and the benchmark's CPU mode."
import os, subprocess, sys, json
from pathlib import Path
import numpy as np, torch, pytest
from foresight.data import moving_digits, write_video
from foresight.extraction import LatentCache

ROOT = Path(__file__).resolve().parents[1]

def _videos(d, n=4):
    for c in moving_digits(n, frames=4, size=56): write_video(d/c.label/f'{c.id}.mp4', c.frames, fps=8)
    return d

def _extract(videos, out, env=None):
    return subprocess.run([sys.executable, str(ROOT/'scripts'/'extract.py'), '--dataset', str(videos), '--size', '56', '--frames', '4',
                           '--batch-size', '2', '--workers', '0', '--shard-size', '1', '--out', str(out)],
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})), timeout=300)

def test_two_ranks_fill_one_cache_like_one_process(tmp_path):
    v = _videos(tmp_path/'v')
    one = _extract(v, tmp_path/'one'); assert one.returncode == 0, one.stderr[-2000:]
    for r in range(2):
        p = _extract(v, tmp_path/'two', dict(RANK=str(r), WORLD_SIZE='2')); assert p.returncode == 0, p.stderr[-2000:]
    a, b = LatentCache(tmp_path/'one'), LatentCache(tmp_path/'two')
    assert a.complete and b.complete and sorted(a.ids()) == sorted(b.ids()) and len(a) == 4
    la, lb = a.load(), b.load()
    assert all(torch.equal(la[k], lb[k]) for k in la)
    assert len(list((tmp_path/'two').glob('manifest-rank*-of-2.json'))) == 2

def test_benchmark_tiny_mode_runs(tmp_path):
    "The benchmark's CPU mode, so that it cannot rot: it must run and pass its correctness check."
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'extraction.py'), '--tiny', '--parts', 'vision,llm,vae', '--out', str(tmp_path),
                        '--workers', '0', '--e2e-batches', '1', '--reps', '1', '--videos', ''], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path/'tiny-cpu.json').read_text())
    assert res['correctness']['pass'] and res['vision'] and res['llm'] and res['vae']
    assert (tmp_path/'tiny-cpu.md').read_text().startswith('# Extraction benchmark')
