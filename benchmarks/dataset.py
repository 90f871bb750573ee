"""Speed of the user's extraction path: `scripts/extract.py` (and `torchrun … scripts/extract.py`) timed from
video files to latents on disk, on the full-size architecture with random weights.

    python benchmarks/dataset.py                       # every workload, on 1 GPU and on all visible GPUs
    python benchmarks/dataset.py --workloads clips224 --gpus 1,2 --clips 1536
    python benchmarks/dataset.py --tiny                # CPU smoke mode (a test runs it so that it cannot rot)

Each run is the command a user types (printed and recorded in `path`); its figures come from the cache it
writes: the time each shard reached the disk. `clips_per_s` (all GPUs together; `mfu` is per GPU) is the steady state
(after every rank wrote its
first shard, so model building, compilation and warm-up are excluded); `seconds` is the whole command.
Writes the list `dataset` into reports/bench/<name>.json (kept beside the other benchmark's keys) and a
markdown table reports/bench/<name>-dataset.md. `scaling` is clips/s on n GPUs over clips/s on one.
"""
import argparse, datetime, json, os, platform, shlex, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOADS = {   # name: (scripts/extract.py arguments, patch tokens per item, what it is)
    'clips224': (['--size', '224', '--frames', '16', '--batch-size', '16'], 8 * 16 * 16,
                 '16×224² clips from 240p webm, post-merge'),
    'frames448': (['--size', '448', '--frames', '1', '--batch-size', '32'], 32 * 32,
                  '448² frames from 240p webm, post-merge'),
    'llm': (['--size', '224', '--frames', '16', '--batch-size', '16', '--layer', 'llm:14'], 8 * 16 * 16,
            '16×224² clips from 240p webm, LLM layer 14'),
}
TINY = {'clips224': (['--size', '56', '--frames', '4', '--batch-size', '4'], 2 * 4 * 4, 'tiny 4×56² clips'),
        'frames448': (['--size', '112', '--frames', '1', '--batch-size', '4'], 8 * 8, 'tiny 112² frames'),
        'llm': (['--size', '56', '--frames', '4', '--batch-size', '4', '--layer', 'llm:1'], 2 * 4 * 4,
                'tiny clips, LLM layer 1')}

def flops_per_token(workload: str, tiny: bool) -> float:
    """Matmul FLOPs per patch token: the vision tower's, plus for `llm` the language model's per visual token (4 patches
    each)."""
    from foresight.models import qwen25_vl_config
    from foresight.order import PATCH
    from benchmarks.extraction import tower_flops_per_token
    cfg = qwen25_vl_config('tiny' if tiny else '7b')
    args, tokens, _ = (TINY if tiny else WORKLOADS)[workload]
    side = int(args[args.index('--size') + 1])
    f = tower_flops_per_token(cfg.vision_config, (side // PATCH) ** 2)
    if workload == 'llm':
        tc, k = cfg.text_config, int(args[args.index('--layer') + 1].split(':')[1])
        kv = 2 * tc.num_key_value_heads * tc.hidden_size // tc.num_attention_heads
        per_layer = 2 * (tc.hidden_size * (tc.hidden_size + kv)
                         + tc.hidden_size * tc.hidden_size + 3 * tc.hidden_size * tc.intermediate_size)
        f += k * per_layer / 4        # one LLM token per 2×2 patches; layers above `k` are never run
    return f

def peak_tflops(tiny: bool) -> float:
    """bf16 peak, measured with an 8192³ matmul (as benchmarks/extraction.py does); 1 on the CPU (MFU is not meaningful
    there)."""
    import torch
    if tiny or not torch.cuda.is_available(): return 1.0
    from benchmarks.extraction import timeit
    A = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16)
    B = torch.randn_like(A)
    t = round(2 * 8192 ** 3 / timeit(lambda: A @ B, warmup=3, reps=10) / 1e12)
    del A, B
    return t

def tiny_dataset(n: int, out: Path) -> Path:
    "For the CPU smoke mode: `n` small synthetic clips (moving digits, mp4), fast to make."
    from foresight.data import moving_digits, write_video
    if not out.exists():
        for c in moving_digits(n, frames=8, size=112): write_video(out/'clips'/f'{c.id}.mp4', c.frames, fps=8)
    return out

def run(workload: str, gpus: int, data: Path, work: Path, a) -> dict:
    "Time one command a user would type; its figures, from the cache it wrote."
    args, tokens, what = (TINY if a.tiny else WORKLOADS)[workload]
    out, report = work/f'{workload}-{gpus}gpu', work/f'{workload}-{gpus}gpu.json'
    shutil.rmtree(out, ignore_errors=True)
    user = ['scripts/extract.py', '--dataset', str(data), '--vlm', 'tiny' if a.tiny else 'random:7b', *args,
            '--workers', str(a.workers), '--shard-size', str(a.shard_size), '--out', str(out), '--report', str(report)]
    # recorded as the issue asks: scripts/extract.py … or torchrun …
    cmd = ['torchrun', '--nproc_per_node', str(gpus)] + user if gpus > 1 else user
    exe = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
           str(gpus)] if gpus > 1 else [sys.executable]
    print('$', shlex.join(cmd), flush=True)
    t = time.time()
    p = subprocess.run(exe + [str(ROOT/u) if u == 'scripts/extract.py' else u for u in user], cwd=ROOT, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=a.timeout)
    seconds = time.time() - t
    if p.returncode != 0: raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}")
    r = json.loads(report.read_text())
    if not r['complete'] or r['skipped']:
        raise RuntimeError(f"{shlex.join(cmd)}: incomplete cache or skipped clips: {r}")
    cps = r.get('steady_clips_per_s') or r['clips'] / seconds
    du = sum(f.stat().st_size for f in out.glob('shard-*.safetensors'))
    shutil.rmtree(out, ignore_errors=True)
    tps = cps * tokens
    return dict(workload=what, path=shlex.join(cmd), gpus=gpus, clips=r['clips'], clips_per_s=round(cps, 2),
                tokens_per_s=round(tps),
                mfu=round(tps * flops_per_token(workload, a.tiny) / (a.peak * 1e12 * gpus), 4),
                seconds=round(seconds, 1),
                bytes_per_clip=round(du / r['clips']), dtype=r['meta']['dtype'])

def markdown(res: dict) -> str:
    L = [f"# Dataset extraction: {res['name']}", '',
         f"{res['date']} · {res['device']} · bf16 peak {res['peak_tflops']} TFLOP/s (measured) · commit "
         f"{res.get('commit', '?')}", '',
         'The command a user runs, timed from video files to latents on disk. clips/s: steady state, each rank\'s rate '
         'after '
         'its first shard (model build, compilation and warm-up excluded), summed over ranks; MFU per GPU; whole '
         'command: '
         'wall-clock time of the command, model build and compilation included.', '',
         '| workload | gpus | clips/s | patch tokens/s | MFU | scaling | whole command | clips | disk/clip | command |',
         '|---|---|---|---|---|---|---|---|---|---|']
    for r in res['dataset']:
        L.append(f"| {r['workload']} | {r['gpus']} | {r['clips_per_s']:.1f} | {r['tokens_per_s']:,} | {r['mfu']:.1%} | "
                 f"{(r['scaling'] or float('nan')):.2f}× | "
                 f"{r['seconds']:.0f} s | {r['clips']} | {r['bytes_per_clip'] / 2 ** 20:.2f} MiB ({r['dtype']}) | "
                 f"`{r['path']}` |")
    return '\n'.join(L + [''] + projection(res)) + '\n'

SSV2_CLIPS = 220_847   # Something-Something v2: train + validation + test

def projection(res: dict, clips: int = SSV2_CLIPS) -> list:
    """Markdown lines: time and disk to extract SSv2 (16 frames a clip; post-merge and one LLM layer, bf16) at 224 and
    448 px on 1 and 8 GPUs, from the measured rates. 448² clips are assumed to run at the patch tokens/s measured for
    448² frames (the tower's FLOPs per token are the same: full attention over one 32×32 frame pair); the LLM at 448 px
    at the
    tokens/s measured at 224 px (optimistic: its attention grows with the 4× longer sequence). 8 GPUs: the per-GPU
    efficiency measured on 2 GPUs, with 8 decoding workers (cores) per GPU."""
    rows = {(r['workload'].split(',')[0].split(' from')[0], r['workload'].split(', ')[-1], r['gpus']): r
            for r in res.get('dataset', [])}
    get = lambda w, p, g=1: rows.get((w, p, g))
    clip224, frame448, llm = get('16×224² clips', 'post-merge'), get('448² frames', 'post-merge'), get('16×224² clips',
            'LLM layer 14')
    two = get('16×224² clips', 'post-merge', 2)
    if not (clip224 and frame448 and llm): return []
    eff = two['scaling'] / 2 if two else 1.0
    tok = {224: 8 * 16 * 16, 448: 8 * 32 * 32}
    rate = {(224, 'post-merge'): clip224['clips_per_s'], (448, 'post-merge'): frame448['tokens_per_s'] / tok[448],
            (224, 'LLM layer 14'): llm['clips_per_s'], (448, 'LLM layer 14'): llm['tokens_per_s'] / tok[448]}
    size = {224: clip224['bytes_per_clip'], 448: clip224['bytes_per_clip'] * 4}
    hours = lambda s: f'{s / 3600:.1f} h' if s >= 3600 else f'{s / 60:.0f} min'
    L = [f'## Projection: Something-Something v2 ({clips:,} clips of 16 frames), from the rates above', '',
         '| size | cache | clips/s (1 GPU) | 1 GPU | 8 GPUs | disk (bf16) |', '|---|---|---|---|---|---|']
    for px in (224, 448):
        for what in ('post-merge', 'LLM layer 14'):
            r = rate[(px, what)]
            L.append(f'| {px}² | {what} | {r:.1f} | {hours(clips / r)} | {hours(clips / (r * 8 * eff))} | '
                     f'{clips * size[px] / 1e12:.2f} TB |')
    L += ['',
          f'8 GPUs: {8 * eff:.1f}× one GPU (the 2-GPU efficiency, {eff:.1%}), with 8 decoding cores per GPU. 448² '
          'clips: the tokens/s '
          'of 448² frames (same FLOPs per token); the LLM at 448² at its 224² tokens/s (optimistic: attention grows '
          'with length). '
          'Model build and compilation (under a minute per command) are not included.']
    return L

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--workloads', default='clips224,frames448,llm')
    ap.add_argument('--gpus', default=None, help='e.g. 1,2 (default: 1 and all visible)')
    ap.add_argument('--clips', type=int, default=3072)
    ap.add_argument('--workers', type=int, default=8)
    ap.add_argument('--shard-size', type=int, default=128)
    ap.add_argument('--timeout', type=int, default=1800)
    ap.add_argument('--tiny', action='store_true')
    ap.add_argument('--name', default=None)
    ap.add_argument('--out', default=str(ROOT/'reports'/'bench'))
    ap.add_argument('--data', default=str(ROOT/'.benchdata'))
    ap.add_argument('--work', default=None)
    a = ap.parse_args(argv)
    import torch
    from benchmarks.make_videos import clip_dataset, main as make_sources
    n = torch.cuda.device_count()
    gpus = [int(g) for g in a.gpus.split(',')] if a.gpus else sorted({1, n} - {0}) or [1]
    if not a.tiny and not n: raise SystemExit('no GPU: run with --tiny for the CPU smoke mode')
    if a.tiny: data = tiny_dataset(a.clips, Path(a.data)/f'tiny-{a.clips}')
    else:
        if not (Path(a.data)/'ssv2like'/'bikes_240p.webm').exists(): make_sources(a.data)
        data = clip_dataset(a.clips, a.data)
    work = Path(a.work or Path(a.data)/'work')
    work.mkdir(parents=True, exist_ok=True)
    a.peak = peak_tflops(a.tiny)
    name = a.name or ('tiny-cpu' if a.tiny else torch.cuda.get_device_name().split()[1].lower())
    path = Path(a.out)/f'{name}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    res = json.loads(path.read_text()) if path.exists() else {}
    commit = os.environ.get('FORESIGHT_COMMIT') or subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                                                                  capture_output=True,
                                                                 text=True).stdout.strip() or '?'
    res.update(name=name, device=torch.cuda.get_device_name() if n else platform.processor() or 'cpu',
               peak_tflops=a.peak, commit=commit,
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               versions=dict(torch=torch.__version__, transformers=__import__('transformers').__version__,
                             python=platform.python_version()))
    keep = [r for r in res.get('dataset', [])
            if r['workload'] not in {(TINY if a.tiny else WORKLOADS)[w][2] for w in a.workloads.split(',')}]
    res['dataset'] = keep
    for w in a.workloads.split(','):
        base = None
        for g in gpus:
            r = run(w, g, data, work, a)
            base = base or (r['clips_per_s'] if g == 1 else None)
            r['scaling'] = round(r['clips_per_s'] / base, 3) if base else None
            res['dataset'].append(r)
            print(json.dumps(r), flush=True)
            # written after every run: a run cut short by a time limit keeps what it measured
            path.write_text(json.dumps(res, indent=1))
            (Path(a.out)/f'{name}-dataset.md').write_text(markdown(res))
    print(markdown(res))

if __name__ == '__main__': main()
