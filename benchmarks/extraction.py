"""Extraction speed: the plain transformers call vs Foresight's path, on the full-size architectures.

    python benchmarks/extraction.py                 # GPU: Qwen2.5-VL-7B tower (random weights), bf16
    python benchmarks/extraction.py --tiny          # CPU smoke mode (the tests run it so it cannot rot)
    python benchmarks/extraction.py --parts llm,vae # LLM hidden states / LTX VAE throughput

Writes reports/bench/<name>.json and a markdown table (device, versions, date). Baseline: the plain
call `model.model.visual(pixel_values, grid_thw)` with sdpa on pixel values prepared beforehand (the
processor excluded), as in the issue; Foresight's path is timed end to end from video files
(decoding in DataLoader workers, GPU preprocessing, packed tower) and also tower-only.
"""
import argparse, json, math, os, sys, time, platform, datetime, statistics
from pathlib import Path
import numpy as np, torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from foresight.models import qwen25_vl_config
from foresight.order import PATCH, TEMPORAL, UNIT
from foresight.fastvision import packed_vision_forward, patchify_batch, compiled_block_forward, fast_llm_hidden

GFLOP_PER_TOKEN = None   # computed from the config below

def tower_flops_per_token(vc, tokens_per_full_segment):
    "Matmul FLOPs per patch token of the vision tower (2·MACs), attention included."
    d, i, n = vc.hidden_size, vc.intermediate_size, vc.depth
    dense = 2 * (d * 3 * d + d * d + 3 * d * i)                      # qkv, proj, gated MLP
    win = (vc.window_size // vc.patch_size) ** 2
    full = len(vc.fullatt_block_indexes)
    attn = 2 * 2 * d * (win * (n - full) + tokens_per_full_segment * full)   # QK^T and AV
    merger = 2 * (4 * d * 4 * d + 4 * d * vc.out_hidden_size) / 4
    return n * dense + attn + merger + 2 * 1176 * d

def timeit(fn, warmup=2, reps=5, cuda=True):
    for _ in range(warmup): fn()
    ts = []
    for _ in range(reps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def build_tower(size, device, dtype):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
    cfg = qwen25_vl_config(size).vision_config
    cfg._attn_implementation = 'sdpa'
    torch.manual_seed(0)
    with torch.device(device): v = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg, torch_dtype=dtype)
    return v.to(device, dtype).eval()

def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()

def random_frames(n, T, side, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (T, side, side, 3), dtype=torch.uint8, generator=g) for _ in range(n)]

# ---------------------------------------------------------------- decoding (DataLoader workers)
class FrameStream(torch.utils.data.IterableDataset):
    "Decodes video files (PyAV) in workers and yields clips of `T` frames, centre-cropped and resized to `side`."
    def __init__(self, files, T, side, n_items, threads=1):
        self.files, self.T, self.side, self.n, self.threads = files, T, side, n_items, threads
    def __iter__(self):
        import av
        wi = torch.utils.data.get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi else (0, 1)
        made, k = 0, wid
        per = math.ceil(self.n / nw)
        while made < per:
            f = self.files[k % len(self.files)]
            k += nw
            with av.open(str(f)) as c:
                s = c.streams.video[0]
                buf = []
                # workers already use the cores
                if self.threads > 1: s.thread_type, s.thread_count = 'AUTO', self.threads
                W0, H0 = s.codec_context.width, s.codec_context.height
                k0 = self.side / min(W0, H0)
                w1, h1 = max(self.side, round(W0 * k0)), max(self.side, round(H0 * k0))
                for fr in c.decode(s):
                    # swscale resizes in C (area filter) while decoding: the short side becomes `side`
                    a = fr.reformat(width=w1, height=h1, format='rgb24', interpolation='AREA').to_ndarray()
                    y0, x0 = (h1 - self.side) // 2, (w1 - self.side) // 2
                    a = a[y0:y0 + self.side, x0:x0 + self.side]
                    buf.append(torch.from_numpy(np.ascontiguousarray(a)))
                    if len(buf) == self.T:
                        yield torch.stack(buf)
                        buf = []
                        made += 1
                        if made >= per: return

def stream_loader(files, T, side, n_items, batch, workers, threads=1):
    ds = FrameStream(files, T, side, n_items, threads)
    return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, pin_memory=True,
                                       prefetch_factor=4 if workers else None,
                                       persistent_workers=False, collate_fn=lambda xs: torch.stack(xs))

# ---------------------------------------------------------------- vision benchmark
def bench_vision(args, dev, dtype, res):
    size = 'tiny' if args.tiny else '7b'
    v = build_tower(size, dev, dtype)
    vc = v.config
    cuda = dev.type == 'cuda'
    side_img, side_clip, T_clip = (112, 56, 4) if args.tiny else (448, 224, 16)
    toks_img = (side_img // PATCH) ** 2
    fl_img = tower_flops_per_token(vc, toks_img)
    fl_clip = tower_flops_per_token(vc, (side_clip // PATCH) ** 2)
    res['flops_per_token_448'] = fl_img
    peak = args.peak_tflops * 1e12
    rows = []
    def record(name, path, tokens, seconds, flops_per_token, items=None, item='image'):
        tps = tokens / seconds
        r = dict(workload=name, path=path, tokens_per_s=tps, items_per_s=(items or 0) / seconds, item=item,
                 tflops=tps * flops_per_token / 1e12, mfu=tps * flops_per_token / peak)
        rows.append(r)
        print(f"{name:28s} {path:34s} {tps:12,.0f} tok/s {r['items_per_s']:9.1f} {item}/s  {r['tflops']:6.1f} TFLOP/s  "
              f"MFU {r['mfu']:.1%}", flush=True)
    # correctness: Foresight's path (compiled, fused) vs plain vs float32 reference on a mixed batch
    clips = random_frames(2, 1, side_img, 1) + random_frames(1, T_clip, side_clip, 2) + random_frames(1, 1,
            side_img - UNIT if not args.tiny else 84, 3)
    pv, g = patchify_batch(clips, dev, dtype)
    with torch.no_grad():
        ref32 = build_tower(size, dev, torch.float32)(pv.float(), grid_thw=g.to(dev))
        plain = v(pv, grid_thw=g.to(dev))
    last, merged, _ = packed_vision_forward(v, pv, g, fused=True,
                                            block_fn=compiled_block_forward('block') if cuda and not args.no_compile
                                            else None)
    corr = dict(plain_vs_fp32_last=rel(plain.last_hidden_state, ref32.last_hidden_state),
                fast_vs_fp32_last=rel(last, ref32.last_hidden_state),
                plain_vs_fp32_merged=rel(plain.pooler_output, ref32.pooler_output),
                fast_vs_fp32_merged=rel(merged, ref32.pooler_output),
                fast_vs_plain_merged=rel(merged, plain.pooler_output))
    corr['pass'] = bool(corr['fast_vs_fp32_merged'] <= 1.5 * corr['plain_vs_fp32_merged'] + 1e-3
                        and corr['fast_vs_fp32_last'] <= 1.5 * corr['plain_vs_fp32_last'] + 1e-3)
    res['correctness'] = corr
    print('correctness', json.dumps(corr), flush=True)
    del ref32
    # plain call, tower only (pixel values prepared beforehand), images at side_img
    for b in ([1, 8] if args.tiny else [1, 8, 32]):
        pv, g = patchify_batch(random_frames(b, 1, side_img), dev, dtype)
        gd = g.to(dev)
        t = timeit(lambda: v(pv, grid_thw=gd), cuda=cuda, reps=args.reps)
        record(f'{side_img}² images, batch {b}', 'plain visual() [baseline]', pv.shape[0], t, fl_img, b)
    for b in ([2] if args.tiny else [4, 16]):
        pv, g = patchify_batch(random_frames(b, T_clip, side_clip), dev, dtype)
        gd = g.to(dev)
        t = timeit(lambda: v(pv, grid_thw=gd), cuda=cuda, reps=args.reps)
        record(f'{T_clip}×{side_clip}² clips, batch {b}', 'plain visual() [baseline]', pv.shape[0], t, fl_clip, b,
               'clip')
    # Foresight's tower, eager and compiled
    variants = [('packed (eager)', None, False)]
    if cuda and not args.no_compile and args.best_only:
        variants = [('packed + compile (block) + fused MLP', compiled_block_forward('block'), True)]
    elif cuda and not args.no_compile:
        variants += [('packed + compile (split)', compiled_block_forward('split'), False),
                     ('packed + compile (block)', compiled_block_forward('block'), False),
                     ('packed + compile (block) + fused MLP', compiled_block_forward('block'), True)]
    best = None
    for vname, fn, fused in variants:
        for b in ([8] if args.tiny else [32, 64]):
            pv, g = patchify_batch(random_frames(b, 1, side_img), dev, dtype)
            t = timeit(lambda: packed_vision_forward(v, pv, g, block_fn=fn, fused=fused), cuda=cuda, reps=args.reps)
            record(f'{side_img}² images, batch {b}', vname, pv.shape[0], t, fl_img, b)
            if best is None or rows[-1]['tokens_per_s'] > best[2]:
                best = (vname, fn, rows[-1]['tokens_per_s'], b, fused)
        for b in ([2] if args.tiny else [16, 32]):
            pv, g = patchify_batch(random_frames(b, T_clip, side_clip), dev, dtype)
            t = timeit(lambda: packed_vision_forward(v, pv, g, block_fn=fn, fused=fused), cuda=cuda, reps=args.reps)
            record(f'{T_clip}×{side_clip}² clips, batch {b}', vname, pv.shape[0], t, fl_clip, b, 'clip')
    # end to end from video files: decode (workers) → GPU resize done in workers → patchify → tower
    sources = [('mp4 (720p H.264)', sorted(Path(args.videos).glob('*.mp4')))] if args.videos else []
    if args.videos and (Path(args.videos)/'ssv2like').is_dir():
        sources.append(('webm (SSv2-like 240p VP9)', sorted((Path(args.videos)/'ssv2like').glob('*.webm'))))
    for src_name, files in sources:
        if not files: continue
        vname, fn, _, b, fused = best
        res['best_path'] = vname
        runs = [((1, side_img, 'image', fl_img), w) for w in args.workers_list]
        runs += [((T_clip, side_clip, 'clip', fl_clip), w) for w in args.workers_list]
        for (T, side, item, fl), workers in runs:
            bb = b if T == 1 else max(1, b // 4)
            n_items = bb * (args.e2e_batches + 2)
            loader = stream_loader(files, T, side, n_items, bb, workers)
            it = iter(loader)
            toks = 0
            n = 0
            for _ in range(2):   # warm-up batches (worker start, compile)
                x = next(it).to(dev, non_blocking=True)
                pv, g = patchify_batch(x, dev, dtype)
                packed_vision_forward(v, pv, g, block_fn=fn, fused=fused)
            if cuda: torch.cuda.synchronize()
            t0 = time.perf_counter()
            for x in it:
                x = x.to(dev, non_blocking=True)
                pv, g = patchify_batch(x, dev, dtype)
                packed_vision_forward(v, pv, g, block_fn=fn, fused=fused)
                toks += pv.shape[0]
                n += x.shape[0]
            if cuda: torch.cuda.synchronize()
            record(f'{T}×{side}² clips from {src_name}' if T > 1 else f'{side}² frames from {src_name}',
                   f'end to end ({workers} decode workers): {vname}', toks, time.perf_counter() - t0, fl, n, item)
    res['vision'] = rows
    return rows

# ---------------------------------------------------------------- LLM hidden states
def bench_llm(args, dev, dtype, res):
    from transformers import Qwen2_5_VLForConditionalGeneration
    size = 'tiny' if args.tiny else '7b'
    cfg = qwen25_vl_config(size)
    cfg._attn_implementation = 'sdpa'
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(dev): m = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(old)
    tc = cfg.text_config
    n_params = sum(p.numel() for n, p in m.model.language_model.named_parameters())
    T, side, text = (4, 56, 20) if args.tiny else (16, 224, 88)
    blk = compiled_block_forward() if dev.type == 'cuda' and not args.no_compile else None
    merged = (T // TEMPORAL) * (side // UNIT) ** 2
    L = merged + text + 2
    rows = []
    for b in ([2] if args.tiny else [8, 16, 32]):
        ids = torch.full((b, L), 1, dtype=torch.long, device=dev)
        ids[:, 1:1 + merged] = cfg.video_token_id
        tt = torch.zeros_like(ids)
        tt[:, 1:1 + merged] = 2
        pv, g = patchify_batch(random_frames(b, T, side), dev, dtype)
        sp = torch.full((b,), 2 / 8.0, device=dev)
        kw = dict(input_ids=ids, pixel_values_videos=pv, video_grid_thw=g.to(dev), mm_token_type_ids=tt,
                  second_per_grid_ts=sp,
                  output_hidden_states=True, use_cache=False)
        llm_flops = 2 * n_params * L + 4 * tc.num_hidden_layers * L * L * tc.hidden_size
        vis_tokens = (T // TEMPORAL) * (side // PATCH) ** 2
        vis_flops = tower_flops_per_token(cfg.vision_config, (side // PATCH) ** 2) * vis_tokens
        fl = b * (llm_flops + vis_flops)
        paths = [('plain model.model() [baseline]', lambda: m.model(**kw))]
        if blk is not None or args.tiny:
            paths.append(('packed tower + LLM',
                          lambda: fast_llm_hidden(m, ids, tt, pv, g, sp, None, layers=(-1,), block_fn=blk, fused=True)))
        for pname, fn in paths:
            with torch.no_grad(): t = timeit(fn, cuda=dev.type == 'cuda', reps=args.reps)
            r = dict(workload=f'{L} tokens/sample ({T}×{side}² clip + text), batch {b}', path=pname,
                     samples_per_s=b / t, tflops=fl / t / 1e12, mfu=fl / t / (args.peak_tflops * 1e12))
            rows.append(r)
            print(f"LLM {r['workload']:45s} {pname:30s} {r['samples_per_s']:8.1f} samples/s {r['tflops']:6.1f} TFLOP/s "
                  f"MFU {r['mfu']:.1%}", flush=True)
    res['llm'] = rows
    del m
    torch.cuda.empty_cache() if dev.type == 'cuda' else None
    return rows

# ---------------------------------------------------------------- LTX VAE
def bench_vae(args, dev, dtype, res):
    from foresight.models import load_video_vae
    vae = load_video_vae('tiny' if args.tiny else 'random:ltx', device=dev, dtype=dtype)
    rows = []
    shapes = [(9, 64)] if args.tiny else [(9, 256), (17, 512)]
    for T, side in shapes:
        for opt in (['none'] if args.tiny else ['none', 'tiling']):
            if opt == 'tiling': vae.enable_tiling()
            else: vae.disable_tiling()
            x = torch.rand(1, 3, T, side, side, device=dev, dtype=dtype) * 2 - 1
            if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                te = timeit(lambda: vae.encode(x).latent_dist.mode(), cuda=dev.type == 'cuda', reps=args.reps)
                z = vae.encode(x).latent_dist.mode()
                td = timeit(lambda: vae.decode(z).sample, cuda=dev.type == 'cuda', reps=args.reps)
            peak = torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == 'cuda' else float('nan')
            r = dict(workload=f'{T}×{side}²', option=opt, encode_clips_per_s=1 / te, decode_clips_per_s=1 / td,
                     peak_mem_gib=peak)
            rows.append(r)
            print(f"VAE {T}x{side}^2 {opt:8s} encode {1/te:7.2f} clips/s decode {1/td:7.2f} clips/s "
                  f"peak {peak:.1f} GiB", flush=True)
    res['vae'] = rows
    return rows

def markdown(res):
    L = [f"# Extraction benchmark: {res['name']}", '',
         f"{res['date']} · {res['device']} · torch {res['versions']['torch']} · transformers "
         f"{res['versions']['transformers']}"
         f" · bf16 peak {res['peak_tflops']} TFLOP/s (measured 8192³ matmul)", '']
    if 'correctness' in res:
        c = res['correctness']
        L += ["Correctness (relative error vs a float32 run of the same tower): plain bf16 "
              f"{c['plain_vs_fp32_merged']:.2e}, Foresight bf16 {c['fast_vs_fp32_merged']:.2e} (merged tokens); "
              f"fast vs plain {c['fast_vs_plain_merged']:.2e}: **{'PASS' if c['pass'] else 'FAIL'}**", '']
    if res.get('vision'):
        L += ['| workload | path | patch tokens/s | items/s | TFLOP/s | MFU |', '|---|---|---|---|---|---|']
        L += [f"| {r['workload']} | {r['path']} | {r['tokens_per_s']:,.0f} | {r['items_per_s']:.1f} {r['item']}s | "
              f"{r['tflops']:.1f} | {r['mfu']:.1%} |" for r in res['vision']]
        L.append('')
    if res.get('llm'):
        L += ['| LLM hidden states | path | samples/s | TFLOP/s | MFU |', '|---|---|---|---|---|']
        L += [f"| {r['workload']} | {r['path']} | {r['samples_per_s']:.1f} | {r['tflops']:.1f} | {r['mfu']:.1%} |"
              for r in res['llm']] + ['']
    if res.get('vae'):
        L += ['| LTX VAE | option | encode clips/s | decode clips/s | peak GiB |', '|---|---|---|---|---|'] + \
             [f"| {r['workload']} | {r['option']} | {r['encode_clips_per_s']:.2f} | {r['decode_clips_per_s']:.2f} | "
              f"{r['peak_mem_gib']:.1f} |" for r in res['vae']] + ['']
    return '\n'.join(L)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--tiny', action='store_true', help='tiny preset on the CPU (smoke mode)')
    ap.add_argument('--parts', default='vision', help='comma-separated: vision, llm, vae')
    ap.add_argument('--videos', default=str(ROOT/'.benchdata'), help='folder of mp4 files for the end-to-end run')
    ap.add_argument('--workers', default=None,
                    help='decode workers, comma-separated to compare (default: 8 and cores-2)')
    ap.add_argument('--e2e-batches', type=int, default=30)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--peak-tflops', type=float, default=None, help='bf16 peak; default: measured with an 8192³ matmul')
    ap.add_argument('--no-compile', action='store_true')
    ap.add_argument('--best-only', action='store_true',
                    help="time only Foresight's default path (compiled block, fused MLP) beside the baseline")
    ap.add_argument('--out', default=str(ROOT/'reports'/'bench'))
    ap.add_argument('--name', default=None)
    a = ap.parse_args(argv)
    a.workers_list = [int(w) for w in a.workers.split(',')] if a.workers else sorted({min(8, (os.cpu_count() or 2) - 1),
            max(1, (os.cpu_count() or 2) - 2)})
    dev = torch.device('cuda' if torch.cuda.is_available() and not a.tiny else 'cpu')
    dtype = torch.bfloat16 if dev.type == 'cuda' else torch.float32
    if a.peak_tflops is None:
        if dev.type == 'cuda':
            A = torch.randn(8192, 8192, device=dev, dtype=dtype)
            B = torch.randn(8192, 8192, device=dev, dtype=dtype)
            a.peak_tflops = round(2 * 8192 ** 3 / timeit(lambda: A @ B, warmup=3, reps=10) / 1e12)
            del A, B
        else: a.peak_tflops = 1.0
    import transformers
    res = dict(name=a.name or ('tiny-cpu' if a.tiny else f"{torch.cuda.get_device_name(0).replace(' ', '_')}"),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               device=torch.cuda.get_device_name(0) if dev.type == 'cuda' else platform.processor() or 'cpu',
               peak_tflops=a.peak_tflops,
               versions=dict(torch=torch.__version__, transformers=transformers.__version__,
                             python=platform.python_version()), args=vars(a))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for part, fn in [('vision', bench_vision), ('llm', bench_llm), ('vae', bench_vae)]:
        if part not in a.parts.split(','): continue
        fn(a, dev, dtype, res)
        # after each part: a cut run keeps what it measured
        (out/f"{res['name']}.json").write_text(json.dumps(res, indent=1))
        (out/f"{res['name']}.md").write_text(markdown(res))
    print(markdown(res))
    if 'correctness' in res and not res['correctness']['pass']: return 1
    return 0

if __name__ == '__main__': sys.exit(main())
