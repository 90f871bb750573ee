"""Speed of the user's extraction path: `scripts/extract.py` (and `torchrun … scripts/extract.py`) timed from
video files to latents on disk, on the full-size architecture with random weights.

    python benchmarks/dataset.py                       # every workload, on 1 GPU and on all visible GPUs
    python benchmarks/dataset.py --workloads clips224 --gpus 1,2 --clips 1536
    python benchmarks/dataset.py --tiny                # CPU smoke mode (a test runs it so that it cannot rot)

Each run is the command a user types (printed and recorded in `path`); its figures come from the cache it
writes: the time each shard reached the disk. `clips_per_s` (all GPUs together; `mfu` is per GPU) is the steady state (after every rank wrote its
first shard, so model building, compilation and warm-up are excluded); `seconds` is the whole command.
Writes the list `dataset` into reports/bench/<name>.json (kept beside the other benchmark's keys) and a
markdown table reports/bench/<name>-dataset.md. `scaling` is clips/s on n GPUs over clips/s on one.
"""
import argparse, datetime, json, os, platform, shlex, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOADS = {   # name: (scripts/extract.py arguments, patch tokens per item, what it is)
    'clips224': (['--size', '224', '--frames', '16', '--batch-size', '16'], 8 * 16 * 16, '16×224² clips from 240p webm, post-merge'),
    'frames448': (['--size', '448', '--frames', '1', '--batch-size', '32'], 32 * 32, '448² frames from 240p webm, post-merge'),
    'llm': (['--size', '224', '--frames', '16', '--batch-size', '16', '--point', 'llm', '--layer', '14'], 8 * 16 * 16,
            '16×224² clips from 240p webm, LLM layer 14'),
}
TINY = {'clips224': (['--size', '56', '--frames', '4', '--batch-size', '4'], 2 * 4 * 4, 'tiny 4×56² clips'),
        'frames448': (['--size', '112', '--frames', '1', '--batch-size', '4'], 8 * 8, 'tiny 112² frames'),
        'llm': (['--size', '56', '--frames', '4', '--batch-size', '4', '--point', 'llm', '--layer', '1'], 2 * 4 * 4, 'tiny clips, LLM layer 1')}

def flops_per_token(workload: str, tiny: bool) -> float:
    "Matmul FLOPs per patch token: the vision tower's, plus for `llm` the language model's per visual token (4 patches each)."
    from foresight.models import qwen25_vl_config
    from benchmarks.extraction import tower_flops_per_token
    cfg = qwen25_vl_config('tiny' if tiny else '7b')
    args, tokens, _ = (TINY if tiny else WORKLOADS)[workload]
    side = int(args[args.index('--size') + 1])
    f = tower_flops_per_token(cfg.vision_config, (side // 14) ** 2)
    if workload == 'llm':
        tc, k = cfg.text_config, int(args[args.index('--layer') + 1])
        per_layer = 2 * (tc.hidden_size * (tc.hidden_size + 2 * tc.num_key_value_heads * tc.hidden_size // tc.num_attention_heads)
                         + tc.hidden_size * tc.hidden_size + 3 * tc.hidden_size * tc.intermediate_size)
        f += k * per_layer / 4        # one LLM token per 2×2 patches; layers above `k` are never run
    return f

def peak_tflops(tiny: bool) -> float:
    "bf16 peak, measured with an 8192³ matmul (as benchmarks/extraction.py does); 1 on the CPU (MFU is not meaningful there)."
    import torch
    if tiny or not torch.cuda.is_available(): return 1.0
    from benchmarks.extraction import timeit
    A = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16); B = torch.randn_like(A)
    t = round(2 * 8192 ** 3 / timeit(lambda: A @ B, warmup=3, reps=10) / 1e12); del A, B
    return t

def run(workload: str, gpus: int, data: Path, work: Path, a) -> dict:
    "Time one command a user would type; its figures, from the cache it wrote."
    args, tokens, what = (TINY if a.tiny else WORKLOADS)[workload]
    out, report = work/f'{workload}-{gpus}gpu', work/f'{workload}-{gpus}gpu.json'
    shutil.rmtree(out, ignore_errors=True)
    user = ['scripts/extract.py', '--dataset', str(data), '--vlm', 'tiny' if a.tiny else 'random:7b', *args,
            '--workers', str(a.workers), '--shard-size', str(a.shard_size), '--out', str(out), '--report', str(report)]
    cmd = ['torchrun', '--nproc_per_node', str(gpus)] + user if gpus > 1 else ['python'] + user
    exe = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(gpus)] if gpus > 1 else [sys.executable]
    print('$', shlex.join(cmd), flush=True)
    t = time.time()
    p = subprocess.run(exe + [str(ROOT/u) if u == 'scripts/extract.py' else u for u in user], cwd=ROOT, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=a.timeout)
    seconds = time.time() - t
    if p.returncode != 0: raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}")
    r = json.loads(report.read_text())
    if not r['complete'] or r['skipped']: raise RuntimeError(f"{shlex.join(cmd)}: incomplete cache or skipped clips: {r}")
    cps = r.get('steady_clips_per_s') or r['clips'] / seconds
    du = sum(f.stat().st_size for f in out.glob('shard-*.safetensors'))
    shutil.rmtree(out, ignore_errors=True)
    tps = cps * tokens
    return dict(workload=what, path=shlex.join(cmd), gpus=gpus, clips=r['clips'], clips_per_s=round(cps, 2), tokens_per_s=round(tps),
                mfu=round(tps * flops_per_token(workload, a.tiny) / (a.peak * 1e12 * gpus), 4), seconds=round(seconds, 1),
                bytes_per_clip=round(du / r['clips']), dtype=r['meta']['dtype'])

def markdown(res: dict) -> str:
    L = [f"# Dataset extraction: {res['name']}", '',
         f"{res['date']} · {res['device']} · bf16 peak {res['peak_tflops']} TFLOP/s (measured) · commit {res.get('commit', '?')}", '',
         'The command a user runs, timed from video files to latents on disk. clips/s: steady state (after every rank wrote '
         'its first shard); seconds: the whole command (model build and compilation included).', '',
         '| workload | gpus | clips/s | patch tokens/s | MFU | scaling | whole command | clips | disk/clip | command |',
         '|---|---|---|---|---|---|---|---|---|---|']
    for r in res['dataset']:
        L.append(f"| {r['workload']} | {r['gpus']} | {r['clips_per_s']:.1f} | {r['tokens_per_s']:,} | {r['mfu']:.1%} | {(r['scaling'] or float('nan')):.2f}× | "
                 f"{r['seconds']:.0f} s | {r['clips']} | {r['bytes_per_clip'] / 2 ** 20:.2f} MiB ({r['dtype']}) | `{r['path']}` |")
    return '\n'.join(L) + '\n'

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--workloads', default='clips224,frames448,llm'); ap.add_argument('--gpus', default=None, help='e.g. 1,2 (default: 1 and all visible)')
    ap.add_argument('--clips', type=int, default=3072); ap.add_argument('--workers', type=int, default=8)
    ap.add_argument('--shard-size', type=int, default=128); ap.add_argument('--timeout', type=int, default=1800)
    ap.add_argument('--tiny', action='store_true'); ap.add_argument('--name', default=None); ap.add_argument('--out', default=str(ROOT/'reports'/'bench'))
    ap.add_argument('--data', default=str(ROOT/'.benchdata')); ap.add_argument('--work', default=None)
    a = ap.parse_args(argv)
    import torch
    from benchmarks.make_videos import clip_dataset, main as make_sources
    n = torch.cuda.device_count()
    gpus = [int(g) for g in a.gpus.split(',')] if a.gpus else sorted({1, n} - {0}) or [1]
    if not a.tiny and not n: raise SystemExit('no GPU: run with --tiny for the CPU smoke mode')
    if not (Path(a.data)/'ssv2like'/'bikes_240p.webm').exists(): make_sources(a.data)
    data = clip_dataset(a.clips, a.data)
    work = Path(a.work or Path(a.data)/'work'); work.mkdir(parents=True, exist_ok=True)
    a.peak = peak_tflops(a.tiny)
    name = a.name or ('tiny-cpu' if a.tiny else torch.cuda.get_device_name().split()[1].lower())
    path = Path(a.out)/f'{name}.json'; path.parent.mkdir(parents=True, exist_ok=True)
    res = json.loads(path.read_text()) if path.exists() else {}
    commit = os.environ.get('FORESIGHT_COMMIT') or subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True,
                                                                 text=True).stdout.strip() or '?'
    res.update(name=name, device=torch.cuda.get_device_name() if n else platform.processor() or 'cpu', peak_tflops=a.peak, commit=commit,
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               versions=dict(torch=torch.__version__, transformers=__import__('transformers').__version__, python=platform.python_version()))
    keep = [r for r in res.get('dataset', []) if r['workload'] not in {(TINY if a.tiny else WORKLOADS)[w][2] for w in a.workloads.split(',')}]
    res['dataset'] = keep
    for w in a.workloads.split(','):
        base = None
        for g in gpus:
            r = run(w, g, data, work, a)
            base = base or (r['clips_per_s'] if g == 1 else None)
            r['scaling'] = round(r['clips_per_s'] / base, 3) if base else None
            res['dataset'].append(r); print(json.dumps(r), flush=True)
            # written after every run: a run cut short by a time limit keeps what it measured
            path.write_text(json.dumps(res, indent=1)); (Path(a.out)/f'{name}-dataset.md').write_text(markdown(res))
    print(markdown(res))

if __name__ == '__main__': main()
