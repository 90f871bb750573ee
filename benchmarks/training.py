"""Speed of C3 query training and E1.5 adapter training on one GPU and data-parallel on several, at the same
global batch.

    python benchmarks/training.py --out reports/bench                          # one process
    torchrun --nproc_per_node 2 benchmarks/training.py --out reports/bench     # DDP, same global batch
    python benchmarks/training.py --task adapter --out reports/bench           # E1.5 latent-route adapter
    python benchmarks/training.py --tiny --out /tmp/b                          # CPU smoke mode

Trains `FuturePredictionQueries` (suffix integration: every step runs the frozen VLM's language model forward
and backward) on action-world clips with `train_queries`, the function the E3 notebooks call, and records
steps/s after the first `--warmup` steps, with the per-rank batch = global batch / world size. Appends one row
to the list `training` in reports/bench/<name>.json (rank 0).

`--task adapter` trains an E1.5 latent-route adapter with `train_latent_route` (the function notebook 05 calls):
the frozen LTX-Video VAE decodes every step's latents for the pixel and LPIPS losses. Its inputs have the shapes
of the GPU check's run (post-merge latents of the 7B model for 16 frames at 224 px, 17 frames at 256 px for the
VAE); the VLM latents are seeded random tensors, since their values do not change the cost.
"""
import argparse, datetime, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--vlm', default='random:7b')
    ap.add_argument('--clips', type=int, default=64)
    ap.add_argument('--global-batch', type=int, default=16)
    ap.add_argument('--steps', type=int, default=30)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--integration', default='suffix')
    ap.add_argument('--task', default='queries', choices=['queries', 'adapter'])
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--tiny', action='store_true')
    ap.add_argument('--out', default=str(ROOT/'reports'/'bench'))
    ap.add_argument('--name', default=None)
    a = ap.parse_args(argv)
    import torch, torch.distributed as dist
    world = int(os.environ.get('WORLD_SIZE', 1))
    local = int(os.environ.get('LOCAL_RANK', 0))
    cuda = torch.cuda.is_available()
    if world > 1: dist.init_process_group('nccl' if cuda else 'gloo')
    if cuda: torch.cuda.set_device(local)
    rank = dist.get_rank() if world > 1 else 0
    run = _adapter if a.task == 'adapter' else _queries
    workload, n, sec = run(a, world, local, cuda)
    if rank == 0:
        dev = torch.cuda.get_device_name() if cuda else 'cpu'
        name = a.name or ('tiny-cpu' if a.tiny else dev.split()[1].lower())
        row = dict(workload=workload,
                   gpus=world,
                   per_rank_batch=a.global_batch // world, steps=a.steps, steps_per_s=round(a.steps / sec, 3),
                   examples_per_s=round(a.steps * a.global_batch / sec, 2),
                   path=('torchrun --nproc_per_node %d ' % world if world > 1
                         else '') + 'benchmarks/training.py ' + ' '.join(argv or sys.argv[1:]),
                   commit=os.environ.get('FORESIGHT_COMMIT', '?'),
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
        p = Path(a.out)/f'{name}.json'
        p.parent.mkdir(parents=True, exist_ok=True)
        res = json.loads(p.read_text()) if p.exists() else {}
        rows = [r for r in res.get('training', [])
                if not (r['workload'] == row['workload'] and r['gpus'] == world)] + [row]
        one = {r['workload']: r['examples_per_s'] for r in rows if r['gpus'] == 1}
        for r in rows:
            r['scaling'] = round(r['examples_per_s'] / one[r['workload']], 3) if r['workload'] in one else None
        res['training'] = rows
        p.write_text(json.dumps(res, indent=1))
        print(json.dumps(row))
    if world > 1: dist.destroy_process_group()

def _queries(a, world, local, cuda) -> tuple:
    "C3 query training: `(workload, examples, seconds for --steps steps after --warmup)`."
    import torch
    from foresight.models import load_vlm
    from foresight.data import action_world
    from foresight.queries import FuturePredictionQueries, TrainConfig, query_data, train_queries
    vlm, size, clips = ('tiny', 56, 16) if a.tiny else (a.vlm, a.size, a.clips)
    model, processor = load_vlm(vlm, device=f'cuda:{local}' if cuda else 'cpu')
    tr = query_data(model, processor, action_world(clips, context=8, future=4, size=size, seed=0), offsets=(1, 2, 3, 4))
    if a.global_batch % world: raise SystemExit(f'--global-batch {a.global_batch} is not divisible by {world} ranks')
    per_rank = a.global_batch // world
    torch.manual_seed(0)
    q = FuturePredictionQueries.for_model(model, tr.target.shape[-1], n_out=tr.target.shape[1],
                                          integration=a.integration,
                                          horizons=len(tr.offsets))
    cfg = lambda steps: TrainConfig(steps=steps, batch_size=per_rank, eval_every=10 ** 6, eval_train=0, progress=False,
                                    warmup=0)
    train_queries(q, model, tr, None, cfg(a.warmup))                    # warm-up: kernels, autotuning, allocator
    if cuda: torch.cuda.synchronize()
    t0 = time.time()
    train_queries(q, model, tr, None, cfg(a.steps))
    if cuda: torch.cuda.synchronize()
    sec = time.time() - t0
    return f'C3 queries ({a.integration}), {vlm}, {len(tr)} examples, global batch {a.global_batch}', len(tr), sec

def _adapter(a, world, local, cuda) -> tuple:
    "E1.5 latent-route adapter training: `(workload, clips, seconds for --steps steps after --warmup)`."
    import torch
    from foresight.models import load_video_vae
    from foresight.extraction import encode_video_vae
    from foresight.reconstruction import make_adapter, train_latent_route
    from foresight.data import moving_digits
    dev = f'cuda:{local}' if cuda else 'cpu'
    vae_name, n, T, side, grid, D = (('tiny', 8, 9, 64, (4, 4, 4), 96) if a.tiny
                                     else ('random:ltx', a.clips, 17, 256, (8, 8, 8), 3584))
    vae = load_video_vae(vae_name, device=dev)
    clips = moving_digits(n, frames=T, size=side, seed=0)
    video = torch.stack([torch.from_numpy(c.frames).permute(0, 3, 1, 2).float() / 255 for c in clips])
    with torch.no_grad(): lat = torch.stack([encode_video_vae(vae, c.frames) for c in clips]).float().cpu()
    z = torch.randn((n, *grid, D), generator=torch.Generator().manual_seed(0))
    if a.global_batch % world: raise SystemExit(f'--global-batch {a.global_batch} is not divisible by {world} ranks')
    ad = lambda: make_adapter('query', D, lat.shape[1], 64, 2)
    train_latent_route(ad(), vae, z, lat, video, steps=a.warmup, batch_size=a.global_batch, lpips_frames=2)
    if cuda: torch.cuda.synchronize()
    t0 = time.time()
    train_latent_route(ad(), vae, z, lat, video, steps=a.steps, batch_size=a.global_batch, lpips_frames=2)
    if cuda: torch.cuda.synchronize()
    name = 'tiny' if a.tiny else '7B post-merge'
    return (f'E1.5 query adapter, latent route ({name} latents → {vae_name} VAE, {T}×{side}²), '
            f'global batch {a.global_batch}', n, time.time() - t0)

if __name__ == '__main__': main()
