"""Extract a dataset's latents into a cache, on one GPU or several.

    python scripts/extract.py --dataset /data/ssv2 --layout ssv2 --vlm Qwen/Qwen2.5-VL-7B-Instruct --point post_merge --out cache/ssv2-post
    torchrun --nproc_per_node 8 scripts/extract.py ...        # each rank takes every 8th shard; one cache folder
    accelerate launch --num_processes 8 scripts/extract.py ...

Re-running the same command resumes: finished shards are skipped. See foresight.extraction.extract_dataset.
"""
import argparse, os, sys
from pathlib import Path

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dataset', required=True); ap.add_argument('--layout', default='folder', choices=['folder', 'ssv2', 'davis', 'ucf101'])
    ap.add_argument('--split', default=None); ap.add_argument('--vlm', default='tiny'); ap.add_argument('--point', default='post_merge')
    ap.add_argument('--layer', type=int, default=None); ap.add_argument('--size', type=int, default=448); ap.add_argument('--frames', type=int, default=16)
    ap.add_argument('--fps', type=float, default=None); ap.add_argument('--batch-size', type=int, default=16); ap.add_argument('--workers', type=int, default=8)
    ap.add_argument('--shard-size', type=int, default=256); ap.add_argument('--strict', action='store_true'); ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    import torch
    from foresight import data
    from foresight.models import load_vlm
    from foresight.extraction import extract_dataset, rank_world
    rank, world = rank_world()
    dev = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else 'cpu'
    reader = dict(folder=data.folder_refs, ssv2=data.ssv2_refs, davis=data.davis_refs, ucf101=data.ucf101_refs)[a.layout]
    refs = reader(a.dataset, **({'split': a.split} if a.split else {}))
    model, processor = load_vlm(a.vlm, device=dev)
    cache = extract_dataset(model, processor, refs, a.out, point=a.point, layer=a.layer, size=a.size, frames=a.frames, fps=a.fps,
                            batch_size=a.batch_size, num_workers=a.workers, shard_size=a.shard_size, strict=a.strict, progress=rank == 0)
    m = cache.manifest()
    print(f"rank {rank}/{world}: {sum(len(s['ids']) for s in m['shards'].values())} clips cached, {len(m['skipped'])} skipped; complete={m['complete']}")
    return 0

if __name__ == '__main__': sys.exit(main())
