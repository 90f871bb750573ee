"""Extract a dataset's latents into a cache, on one GPU or several.

    python scripts/extract.py --dataset /data/ssv2 --layout ssv2 --vlm Qwen/Qwen2.5-VL-7B-Instruct \\
        --layer post_merge --out cache/ssv2-post
    python scripts/extract.py ... --layer llm:14 --out cache/ssv2-llm14     # LLM hidden states at layer 14
    torchrun --nproc_per_node 8 scripts/extract.py ...        # each rank takes every 8th shard; one cache folder
    accelerate launch --num_processes 8 scripts/extract.py ...

Re-running the same command resumes: finished shards are skipped. Latents are stored as bfloat16
(`--dtype float32` on request), whole or pooled per frame / per clip (`--pool`). At the end, rank 0 waits
for every rank and prints the merged manifest and the speed; `--report FILE` also writes them as JSON.
See foresight.extraction.extract_dataset.
"""
import argparse, json, os, sys, time
from pathlib import Path

def speed(manifest: dict, started: float) -> dict:
    """Clips, seconds and clips/s of a finished cache, from the time each shard was written. `steady_clips_per_s`
    adds up each rank's own rate after its first shard (model build, compilation and warm-up excluded); the ranks
    run independently, so a rank that started a few seconds later does not count as idle GPU time."""
    clips = sum(len(e['ids']) for e in manifest['shards'].values())
    out = dict(clips=clips, skipped=len(manifest['skipped']), complete=manifest['complete'],
               seconds=round(time.time() - started, 2))
    by_rank = {}
    for e in manifest['shards'].values():
        if 'written' in e: by_rank.setdefault(e.get('rank', 0), []).append((e['written'], len(e['ids'])))
    rates = {}
    for r, sh in sorted(by_rank.items()):
        sh.sort()
        if len(sh) > 1 and sh[-1][0] > sh[0][0]: rates[r] = sum(n for _, n in sh[1:]) / (sh[-1][0] - sh[0][0])
    if rates:
        out['steady_clips_per_s'] = round(sum(rates.values()), 2)
        out['rank_clips_per_s'] = {str(r): round(v, 2) for r, v in rates.items()}
    return out

def main(argv=None):
    started = time.time()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dataset', required=True)
    ap.add_argument('--layout', default='folder', choices=['folder', 'ssv2', 'davis', 'ucf101'])
    ap.add_argument('--split', default=None)
    ap.add_argument('--vlm', default='tiny')
    ap.add_argument('--layer', default='post_merge',
                    help='pre_merge, post_merge, a vision block k, or llm:k (llm:-1 the last)')
    ap.add_argument('--size', type=int, default=448)
    ap.add_argument('--frames', type=int, default=16)
    ap.add_argument('--fps', type=float, default=None)
    ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--workers', type=int, default=8, help='decoding workers per GPU')
    ap.add_argument('--shard-size', type=int, default=256)
    ap.add_argument('--strict', action='store_true')
    ap.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float16', 'float32'],
                    help='storage dtype of the latents')
    ap.add_argument('--pool', default='none', choices=['none', 'frame', 'clip'],
                    help="store every token, or the mean per frame / per clip")
    ap.add_argument('--no-compile', action='store_true',
                    help='run the vision blocks eagerly (no torch.compile warm-up)')
    ap.add_argument('--report', default=None, help='write the merged manifest summary and speed as JSON here (rank 0)')
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    import torch, torch.distributed as dist
    from foresight import data
    from foresight.models import load_vlm
    from foresight.extraction import extract_dataset, rank_world, LatentCache
    if int(os.environ.get('WORLD_SIZE', 1)) > 1 and 'MASTER_ADDR' in os.environ and not dist.is_initialized():
        dist.init_process_group('gloo')   # only to wait for every rank at the end; the GPUs never talk
    rank, world = rank_world()
    if torch.cuda.is_available(): torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    dev = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else 'cpu'
    reader = dict(folder=data.folder_refs, ssv2=data.ssv2_refs, davis=data.davis_refs,
                  ucf101=data.ucf101_refs)[a.layout]
    refs = reader(a.dataset, **({'split': a.split} if a.split else {}))
    model, processor = load_vlm(a.vlm, device=dev)
    extract_dataset(model, processor, refs, a.out, layer=a.layer, size=a.size, frames=a.frames, fps=a.fps,
                    batch_size=a.batch_size, num_workers=a.workers, shard_size=a.shard_size, strict=a.strict,
                    progress=rank == 0,
                    dtype=a.dtype, pool=a.pool, compile=not a.no_compile)
    if dist.is_initialized(): dist.barrier()           # every rank's manifest is final
    if rank == 0:
        m = LatentCache(a.out).manifest()
        for s, e in m['shards'].items(): e.setdefault('rank', int(s[6:11]) % world)
        out = dict(speed(m, started), world=world, out=str(a.out), meta=m['meta'])
        print(f"{out['clips']} clips cached over {world} rank(s), {out['skipped']} skipped; "
              f"complete={out['complete']}; "
              f"{out['seconds']} s in all" + (f"; steady {out['steady_clips_per_s']} clips/s"
                                              if 'steady_clips_per_s' in out else ''))
        if a.report: Path(a.report).write_text(json.dumps(out, indent=1))
    if dist.is_initialized(): dist.destroy_process_group()
    return 0

if __name__ == '__main__': sys.exit(main())
