"""Reliability (issues 10 and 18): bad inputs, interruptions, untrusted files, determinism.

Every test that feeds a bad input or injects a fault counts it; every artifact checked after a fault is
counted, with the problems found (lost, duplicated or half-written). The session ends with one line:

    reliability: N bad inputs tried, M faults injected, K artifacts checked, 0 data lost (lost/duplicated/half-written)

Interruptions are real: a child process (a small driver script, or the `foresight` command) is killed
with SIGKILL or SIGINT at a controlled point (it writes a marker file there and waits), then the same
command runs again and its result is compared with an uninterrupted run.
"""
import ast, inspect, json, os, signal, subprocess, sys, textwrap, time, warnings
from collections import Counter
from pathlib import Path

import numpy as np, pytest, torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg', PYTHONHASHSEED='0', PYTHONUNBUFFERED='1')

# ---------------------------------------------------------------------------------------------------
# The tally and the session summary

TALLY = Counter()

def bad_input(n: int = 1): TALLY['bad inputs'] += n
def fault(n: int = 1): TALLY['faults'] += n

def checked(problems: list, n_artifacts: int) -> list:
    "Count `n_artifacts` checked and the `problems` found in them (the caller asserts there are none)."
    TALLY['artifacts'] += n_artifacts
    TALLY['problems'] += len(problems)
    return problems

class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        t = TALLY
        if not (t['bad inputs'] or t['faults']): return
        failed = [r for r in terminalreporter.stats.get('failed', []) if 'test_reliability' in r.nodeid
                  or 'test_properties' in r.nodeid]
        terminalreporter.write_sep('-', 'reliability')
        terminalreporter.write_line(f"reliability: {t['bad inputs']} bad inputs tried, {t['faults']} faults injected, "
                                    f"{t['artifacts']} artifacts checked, {t['problems']} data lost "
                                    "(lost/duplicated/half-written)"
                                    + (f"; {len(failed)} reliability test(s) FAILED" if failed else ''))

@pytest.fixture(scope='session', autouse=True)
def reliability_summary(request):
    "Registers the summary line once per session (also imported by test_properties.py)."
    pm = request.config.pluginmanager
    if not pm.has_plugin('foresight-reliability'): pm.register(_Summary(), 'foresight-reliability')
    yield

# ---------------------------------------------------------------------------------------------------
# Killing a child at a controlled point

class Child:
    """A command started in its own process group (so that what it leaves behind, a papermill kernel, can
    be cleaned up), with SIGINT at its default even when this process was started in the background."""
    def __init__(self, cmd, env=None, log: Path | None = None, cwd=ROOT):
        self.cmd, self.log = cmd, Path(log)
        with open(self.log, 'ab') as out:
            self.p = subprocess.Popen(cmd, env=env or ENV, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True,
                                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    def _cleanup(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        try: os.killpg(self.p.pid, signal.SIGKILL)     # its group only: processes this test started
        except (ProcessLookupError, PermissionError): pass
    def kill_at(self, marker: Path, sig, timeout=240) -> int:
        "Wait for the child to write `marker`, send it `sig` (the fault), wait for it to end; its exit code."
        t0 = time.time()
        try:
            while not marker.exists():
                if self.p.poll() is not None:
                    raise AssertionError(f"{self.cmd} ended (rc={self.p.returncode}) before the fault point "
                                         f"{marker.name}:\n{self.log.read_text()[-3000:]}")
                if time.time() - t0 > timeout:
                    raise AssertionError(f"{self.cmd} did not reach {marker.name} in {timeout}s")
                time.sleep(0.05)
            os.kill(self.p.pid, sig)
            fault()
            return self.p.wait(timeout=120)
        finally: self._cleanup()
    def wait(self, timeout=300) -> int:
        try: return self.p.wait(timeout=timeout)
        finally: self._cleanup()

def run_until_marker(cmd, marker: Path, sig, env=None, log: Path | None = None, timeout=240, cwd=ROOT) -> int:
    "Run `cmd` until it writes `marker`, then send it `sig`; the exit code."
    return Child(cmd, env, log or marker.with_suffix('.log'), cwd).kill_at(marker, sig, timeout)

def run_to_end(cmd, env=None, log: Path | None = None, timeout=300, cwd=ROOT):
    r = subprocess.run(cmd, env=env or ENV, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if log is not None:
        with open(log, 'a') as f: f.write(r.stdout + r.stderr)
    return r

# ---------------------------------------------------------------------------------------------------
# Shared tiny models

@pytest.fixture(scope='module')
def tiny():
    from foresight.models import load_vlm, load_video_vae
    model, processor = load_vlm('tiny')
    vae = load_video_vae('tiny')
    return model, processor, vae

# ===================================================================================================
# 1. Bad inputs: a clear error that names the file or parameter and the fix

def _clip(frames=12, size=56, seed=0):
    from foresight.data import moving_digits
    return moving_digits(1, frames=frames, size=size, seed=seed)[0].frames

@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    from foresight.data import write_video
    d = tmp_path_factory.mktemp('videos')
    f = _clip()
    return {ext: write_video(d/f'ok.{ext}', f, fps=8) for ext in ('mp4', 'webm', 'avi', 'gif')}

@pytest.mark.parametrize('ext', ['mp4', 'webm', 'avi'])
@pytest.mark.parametrize('cut', [0.0, 0.05, 0.5, 0.9])
def test_truncated_videos_are_refused_by_name(videos, tmp_path, ext, cut):
    "Cut-off downloads: an error naming the file, never a shorter clip passed off as whole."
    from foresight.data import read_video, VideoError
    b = videos[ext].read_bytes()
    p = tmp_path/f'cut-{int(cut * 100)}.{ext}'
    p.write_bytes(b[:int(len(b) * cut)])
    bad_input()
    with pytest.raises(VideoError) as e: read_video(p)
    msg = str(e.value)
    assert p.name in msg and any(w in msg for w in ('re-download', 'remove it', 'allow_truncated')), msg

def test_corrupt_and_fake_videos(videos, tmp_path):
    from foresight.data import read_video, VideoError
    rng = np.random.default_rng(0)
    cases = {}
    for ext, p in videos.items():
        b = bytearray(p.read_bytes())
        for i in rng.integers(len(b) // 4, len(b), 300): b[i] = int(rng.integers(256))
        cases[f'corrupt.{ext}'] = bytes(b)
    cases.update({'empty.mp4': b'', 'text.mp4': b'hello, not a video', 'noise.webm': rng.bytes(5000),
                  'image-bytes.avi': b'\x89PNG\r\n\x1a\n' + rng.bytes(100)})
    for name, data in cases.items():
        p = tmp_path/name
        p.write_bytes(data)
        bad_input()
        try: v = read_video(p)
        except VideoError as e:
            assert name in str(e)
            continue
        # a corruption that leaves the stream decodable (a flipped bit inside a frame) is not detectable
        # from the container; what comes back must still be well-formed frames
        assert v.dtype == np.uint8 and v.ndim == 4 and v.shape[-1] == 3 and v.shape[0] >= 1, name
    with pytest.raises(VideoError, match='no such file'): read_video(tmp_path/'missing.mp4')
    with pytest.raises(VideoError, match='positive'): read_video(videos['mp4'], fps=0)
    with pytest.raises(VideoError, match='max_frames'): read_video(videos['mp4'], max_frames=-3)
    bad_input(3)

def test_zero_frames_and_empty_pixels():
    from foresight.data import as_frames, VideoError
    for a, msg in [(np.zeros((0, 8, 8, 3), np.uint8), 'zero frames'), (np.zeros((2, 0, 8, 3), np.uint8), 'no pixels'),
                   (np.zeros((3, 8, 8, 7), np.uint8), '7 channels'),
                   (np.zeros((2, 3, 8, 8, 3), np.uint8), 'expected (T, H, W, 3)')]:
        bad_input()
        with pytest.raises(VideoError, match=msg.replace('(', r'\(').replace(')', r'\)')): as_frames(a, 'clip-x')

def test_unwritable_frames(tmp_path):
    from foresight.data import VideoError, write_video
    with pytest.raises(VideoError, match='too small to encode'):
        write_video(tmp_path/'never.mp4', np.zeros((2, 1, 8, 3), np.uint8))
    with pytest.raises(VideoError, match='fps must be positive'):
        write_video(tmp_path/'never.mp4', np.zeros((2, 8, 8, 3), np.uint8), fps=0)
    bad_input(2)
    assert list(tmp_path.iterdir()) == []

def test_gray_rgba_16bit_are_converted_and_noted(tmp_path):
    "Decision: convert, the way image libraries do, and say so (Clip.meta['converted']); never guess silently."
    from PIL import Image
    from foresight.data import read_image, folder_refs, read_video, write_video
    g16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path/'g16.png')
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 1] = 180
    rgba[:16, :, 3] = 255
    Image.fromarray(rgba, 'RGBA').save(tmp_path/'rgba.png')
    Image.fromarray(np.full((32, 32), 77, np.uint8), 'L').save(tmp_path/'gray.png')
    Image.fromarray(np.stack([np.full((32, 32), 77, np.uint8), np.full((32, 32), 255, np.uint8)], -1),
                    'LA').save(tmp_path/'la.png')
    notes = []
    a = read_image(tmp_path/'g16.png', notes)
    assert a.shape == (1, 64, 64, 3) and notes == ['16-bit frames rescaled to 8 bits', 'gray repeated to RGB']
    assert np.abs(a[0, ..., 0].astype(int) - np.round(g16 / 257)).max() <= 1          # 16 → 8 bits, not clipped at 255
    r = read_image(tmp_path/'rgba.png')
    assert r[0, 0, 0].tolist() == [0, 180, 0] and r[0, -1, 0].tolist() == [255, 255, 255]
    assert read_image(tmp_path/'gray.png')[0, 0, 0].tolist() == [77, 77, 77]
    # gray+alpha is one image, not 32 frames
    assert read_image(tmp_path/'la.png').shape == (1, 32, 32, 3)
    clips = {c.id: c for c in (r.load() for r in folder_refs(tmp_path))}
    assert clips['folder-g16'].meta['converted'] == ['16-bit frames rescaled to 8 bits', 'gray repeated to RGB']
    assert 'alpha composited over white' in clips['folder-rgba'].meta['converted']
    gray_video = write_video(tmp_path/'gray.mp4', np.full((9, 32, 32), 128, np.uint8))     # (T, H, W) gray frames
    v = read_video(gray_video)
    assert v.shape == (9, 32, 32, 3) and abs(int(v.mean()) - 128) <= 2
    bad_input(5)

def test_images_below_28px_or_above_the_budget(tiny):
    "The VLM takes sides that are multiples of 28 within the processor's pixel budget; the errors say how to resize."
    from foresight.data import check_frame_size, fit_frames, resize_frames, VideoError, pixel_budget
    from foresight.extraction import extract_vision
    model, processor, _ = tiny
    lo, hi = pixel_budget(processor)
    assert (lo, hi) == (784, 448 * 448)
    for shape, ours in [((1, 20, 20, 3), 'smaller than one 28-px unit'), ((1, 30, 56, 3), 'not a multiple of 28'),
                        ((1, 476, 476, 3), 'above the processor')]:
        f = np.zeros(shape, np.uint8)
        bad_input(2)
        with pytest.raises(VideoError) as e: check_frame_size(f, processor, name='img-7')
        assert ours in str(e.value) and 'img-7' in str(e.value) and ('resize' in str(e.value)
                                                                     or 'fit_frames' in str(e.value))
        with pytest.raises(VideoError, match=ours): extract_vision(model, processor, f)   # the same check
        fixed = fit_frames(f, processor)                                                   # the fix the message names
        assert check_frame_size(fixed, processor) is not None and fixed.shape[1] * fixed.shape[2] <= hi
        if fixed.shape[1] * fixed.shape[2] <= 56 * 56:
            assert extract_vision(model, processor, fixed).pre_merge.shape[0] == 1
    with pytest.raises(VideoError, match='positive multiple of 28'):
        resize_frames(np.zeros((1, 30, 30, 3), np.uint8), 14)
    bad_input()

def test_vae_frame_counts(tiny):
    from foresight.data import vae_frame_count, VideoError
    from foresight.extraction import encode_video_vae
    vae = tiny[2]
    f = _clip(frames=12, size=64)
    bad_input(2)
    with pytest.raises(VideoError, match=r'8k\+1 frames; got 12. Trim to 9 frames or pad to 17'):
        encode_video_vae(vae, f)
    with pytest.raises(VideoError, match='multiples of 32'): encode_video_vae(vae, f[:9, :60])
    assert encode_video_vae(vae, f[:vae_frame_count(len(f))]).shape == (16, 2, 2, 2)

def test_dataset_layouts(tmp_path):
    "A folder in the wrong layout stops at once, naming the missing file and the layout expected."
    from foresight.data import ssv2_refs, davis_refs, ucf101_refs, folder_refs, DatasetLayoutError
    (tmp_path/'empty').mkdir()
    (tmp_path/'file.txt').write_text('x')
    cases = [(ssv2_refs, 'empty', 'labels/validation.json: missing'), (davis_refs, 'empty', 'JPEGImages/480p: missing'),
             (ucf101_refs, 'empty', 'classInd.txt: missing'), (folder_refs, 'empty', 'no videos'),
             (folder_refs, 'file.txt', 'not a folder'),
             (ssv2_refs, 'nowhere', 'Expected the official layout')]
    for reader, d, msg in cases:
        bad_input()
        with pytest.raises(DatasetLayoutError) as e: reader(tmp_path/d)
        assert msg in str(e.value) and str(tmp_path/d) in str(e.value), str(e.value)

def test_missing_labels_are_skipped_listed_or_strict(tmp_path):
    from foresight.data import ssv2_refs, DatasetLayoutError
    lab = tmp_path/'labels'
    lab.mkdir()
    (lab/'labels.json').write_text(json.dumps({'Dropping something': '3'}))
    (lab/'train.json').write_text(json.dumps([{'id': '1', 'template': 'Dropping [something]'},
                                              {'id': '2', 'label': 'no template'},
                                              {'id': '3', 'template': ''},
                                              {'id': '../../etc/passwd', 'template': 'Dropping [something]'}]))
    r = ssv2_refs(tmp_path, 'train')
    bad_input(3)
    assert [x.id for x in r] == ['ssv2-1'] and r[0].label == '3'
    assert set(r.skipped) == {'ssv2-2', 'ssv2-3', 'entry 3'} and 'not a plain file name' in r.skipped['entry 3']
    with pytest.raises(DatasetLayoutError, match='ssv2-2: missing label'): ssv2_refs(tmp_path, 'train', strict=True)

def test_nan_latents_are_skipped_or_strict(tmp_path):
    from foresight.extraction import cache_latents
    from foresight.data import moving_digits
    items = moving_digits(5, frames=2, size=28)
    def fn(c): return torch.full((2,), float('nan') if c.id.endswith('-3') else 1.0)
    c = cache_latents(items, fn, tmp_path/'c', shard_size=2, progress=False)
    bad_input()
    assert c.complete and sorted(c.load()) == sorted(i.id for i in items if not i.id.endswith('-3'))
    assert list(c.manifest()['skipped']) == [items[3].id] and 'NaN/Inf' in c.manifest()['skipped'][items[3].id]
    with pytest.raises(FloatingPointError, match=items[3].id):
        cache_latents(items, fn, tmp_path/'s', shard_size=2, progress=False, strict=True)
    bad_input()

def test_nan_in_a_planted_loss_is_named():
    from foresight.findings import check_finite, NonFiniteError
    bad_input(2)
    with pytest.raises(NonFiniteError, match='training loss at step 7: 1 of 1 values are not finite'):
        check_finite(torch.tensor(float('nan')), 'training loss at step 7')
    with pytest.raises(NonFiniteError, match='2 Inf'): check_finite(np.array([1.0, np.inf, -np.inf]), 'targets')

def _planted_nan_training(tiny):
    from foresight.data import action_world
    from foresight.queries import query_data, FuturePredictionQueries, train_queries, TrainConfig
    model, processor, _ = tiny
    tr = query_data(model, processor, action_world(4, context=2, future=1, size=28, seed=1), offsets=(0,), texts='')
    tr.target = tr.target.clone()
    tr.target[0, 0, 0] = float('nan')
    torch.manual_seed(0)
    q = FuturePredictionQueries.for_model(model, 96, integration='suffix')
    return train_queries(q, model, tr, None,
                         TrainConfig(steps=2, batch_size=4, eval_every=2, eval_train=0, progress=False)), q

def test_nan_loss_stops_training(tiny):
    "A NaN in the targets must stop training with a named error, not train on and checkpoint NaN weights."
    bad_input()
    try: r, q = _planted_nan_training(tiny)
    except (FloatingPointError, ValueError) as e:
        assert 'NaN' in str(e) or 'finite' in str(e)
        return
    pytest.xfail("foresight.queries.train_queries (nbs/08) trains on through a NaN loss "
                 f"(train_loss={r['history'][-1]['train_loss']}, "
                 f"NaN weights: {any(torch.isnan(p).any().item() for p in q.parameters())}): reported to the 08 owner")

def test_dataset_wide_run_skips_lists_and_counts(tiny, tmp_path):
    "One bad file must not cost the run: skipped, listed in the cache and counted in the findings; strict=True stops."
    from foresight.data import folder_refs, write_video, VideoError
    from foresight.extraction import extract_dataset
    from foresight.findings import Findings
    model, processor, _ = tiny
    d = tmp_path/'data'/'cats'
    d.mkdir(parents=True)
    f = _clip(frames=12, size=56)
    for i in range(3): write_video(d/f'ok{i}.mp4', f[:4])
    (d/'broken.mp4').write_bytes(b'\x00' * 100)
    (d/'empty.webm').write_bytes(b'')
    cut = write_video(d/'cut.avi', f)
    cut.write_bytes(cut.read_bytes()[:int(cut.stat().st_size * 0.9)])
    refs = folder_refs(tmp_path/'data')
    bad_input(3)
    cache = extract_dataset(model, processor, refs, tmp_path/'cache', size=56, frames=4, batch_size=2, num_workers=0,
                            shard_size=4, progress=False)
    skipped = cache.manifest()['skipped']
    assert sorted(skipped) == ['folder-cats_broken', 'folder-cats_cut', 'folder-cats_empty'], skipped
    assert sorted(cache.load()) == ['folder-cats_ok0', 'folder-cats_ok1', 'folder-cats_ok2']
    fnd = Findings('demo', 'Demo', 'Robust?', {}, run_dir=tmp_path/'run')
    fnd.skip_many(skipped)
    fnd.write('Yes.')
    md, res = (tmp_path/'run'/'findings.md').read_text(), json.loads((tmp_path/'run'/'results.json').read_text())
    assert res['n_skipped'] == 3 and '3 input(s) were skipped' in md and 'cut.avi' in md
    with pytest.raises(VideoError, match='broken.mp4'):
        extract_dataset(model, processor, refs, tmp_path/'strict', size=56, frames=4, batch_size=2, num_workers=0,
                        shard_size=4, progress=False, strict=True)

# ===================================================================================================
# 2. Interruptions: kill, run the same command again, compare with an uninterrupted run

def toy_latent(c):
    "A stand-in for a model in the cache driver: deterministic, and NaN for clip 3 (a bad item that must stay skipped)."
    i = int(c.id.rsplit('-', 1)[1])
    return torch.full((3,), float('nan')) if i == 3 else torch.from_numpy(c.frames).float().mean((1, 2)) / (i + 1)

DRIVER = r'''
import os, sys, time, json
from pathlib import Path
import torch
task, out, markers = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
faults = [f for f in os.environ.get('FAULTS', '').split(',') if f]

def due(stage):
    "A fault point fires once, in the order given, in whichever run of the same command reaches it first."
    before = faults[:faults.index(stage)] if stage in faults else []
    return stage in faults and not (markers/stage).exists() and all((markers/f).exists() for f in before)

def hold(stage):
    "At a fault point: write the marker and wait to be killed."
    if due(stage): (markers/stage).write_text(str(os.getpid())); time.sleep(300)

#TOY_LATENT
if task == 'cache':
    import safetensors.torch as st, foresight.extraction as E
    from foresight.data import moving_digits
    save, aw = st.save_file, E.atomic_write
    def save_file(tensors, path, metadata=None):
        save(tensors, path, metadata=metadata)
        # half of shard 2 is on disk, under its temporary name
        if metadata and metadata.get('shard') == '2' and due('write2'):
            b = Path(path).read_bytes(); Path(path).write_bytes(b[:len(b) // 2]); hold('write2')
    def atomic_write(path, data):
        new3 = 'shard-00003' in data and 'shard-00003' not in Path(path).read_text()
        if Path(path).name.startswith('manifest') and new3:
            hold('manifest3')                                 # shard 3 renamed into place, the manifest not yet updated
        return aw(path, data)
    st.save_file, E.atomic_write = save_file, atomic_write
    def fn(c):
        i = int(c.id.rsplit('-', 1)[1])
        if i == 2: hold('compute1')
        return toy_latent(c)
    E.cache_latents(moving_digits(7, frames=2, size=28), fn, out, shard_size=2, progress=False)
    print('cache done')

if task == 'train':
    import foresight.queries as Q
    from foresight.models import load_vlm
    model, processor = load_vlm('tiny')
    from foresight.data import action_world
    tr = Q.query_data(model, processor, action_world(6, context=2, future=1, size=28, seed=1), offsets=(0,), texts='')
    sq = Q.save_queries
    def save_queries(q, path):
        p = sq(q, path)
        # weights written, optimiser state not yet
        if Path(path).parent.name == '.step-0000004.tmp': hold('ckpt4-half')
        return p
    import foresight.query_training as QT   # save_checkpoint calls the training module's save_queries
    QT.save_queries = save_queries
    torch.manual_seed(0); q = Q.FuturePredictionQueries.for_model(model, 96, integration='suffix')
    cfg = Q.TrainConfig(steps=6, batch_size=3, eval_every=2, eval_train=0, ckpt_dir=str(out), progress=False)
    r = Q.train_queries(q, model, tr, None, cfg)
    (out/'result.json').write_text(json.dumps(dict(resumed_from=r['resumed_from'], history=r['history'])))
    print('train done')
'''

@pytest.fixture(scope='module')
def driver(tmp_path_factory):
    p = tmp_path_factory.mktemp('driver')/'driver.py'
    p.write_text(DRIVER.replace('#TOY_LATENT', inspect.getsource(toy_latent)))
    return p

def cache_problems(root: Path, clean: dict, clean_manifest: dict) -> list:
    "Everything wrong with an interrupted-then-resumed cache, compared with a clean one."
    from safetensors.torch import load_file
    from foresight.extraction import LatentCache
    probs = []
    try: m = json.loads((root/'manifest.json').read_text())
    except Exception as e: return [f'manifest unreadable: {e}']
    if not m.get('complete'): probs.append('manifest not complete')
    ids = [i for s in sorted(m['shards']) for i in m['shards'][s]['ids']]
    probs += [f'{i}: in {n} shards (duplicated)' for i, n in Counter(ids).items() if n > 1]
    probs += [f'{i}: lost' for i in clean if i not in ids]
    for s, e in m['shards'].items():
        try: d = load_file(root/s)
        except Exception as ex:
            probs.append(f'{s}: half-written or missing ({type(ex).__name__}: {ex})')
            continue
        if sorted(d) != sorted(e['ids']): probs.append(f'{s}: holds {sorted(d)}, the manifest says {e["ids"]}')
    for p in root.iterdir():
        if p.name not in m['shards'] and p.name != 'manifest.json' and not (p.name.startswith('.')
                                                                            and p.name.endswith('.tmp')):
            probs.append(f'{p.name}: a file the manifest does not list')
    got = LatentCache(root).load()
    probs += [f'{k}: differs from the clean run' for k in clean if k in got and not torch.equal(got[k], clean[k])]
    if m['skipped'].keys() != clean_manifest['skipped'].keys():
        probs.append(f"skipped {sorted(m['skipped'])} != {sorted(clean_manifest['skipped'])}")
    if {s: e['ids'] for s, e in m['shards'].items()} != {s: e['ids'] for s, e in clean_manifest['shards'].items()}:
        probs.append('shard layout differs')
    return checked(probs, len(m['shards']) + 1)

def test_extraction_killed_and_resumed(driver, tmp_path):
    """cache_latents under SIGINT while a shard is computed, SIGKILL in the middle of writing a shard, and
    SIGKILL between a shard's rename and the manifest update: the same command then gives the clean cache."""
    from foresight.extraction import LatentCache, cache_latents
    from foresight.data import moving_digits
    from safetensors.torch import load_file
    clean, cut, mk = tmp_path/'clean', tmp_path/'cut', tmp_path/'markers'
    mk.mkdir()
    env = dict(ENV, FAULTS='compute1,write2,manifest3')
    cmd = [sys.executable, str(driver), 'cache', str(cut), str(mk)]
    first = Child(cmd, env=env, log=tmp_path/'log')
    # uninterrupted, meanwhile
    cache_latents(moving_digits(7, frames=2, size=28), toy_latent, clean, shard_size=2, progress=False)
    for stage, sig in [('compute1', signal.SIGINT), ('write2', signal.SIGKILL), ('manifest3', signal.SIGKILL)]:
        (first if stage == 'compute1' else Child(cmd, env=env, log=tmp_path/'log')).kill_at(mk/stage, sig)
        m = LatentCache(cut).manifest()
        # an interrupted cache never claims to be complete
        assert not m.get('complete'), stage
        # what it lists is whole
        for s, e in m['shards'].items(): assert sorted(load_file(cut/s)) == sorted(e['ids']), (stage, s)
        if stage == 'write2':
            half = [p for p in cut.iterdir() if p.name.startswith('.shard-00002')]
            assert half and 'shard-00002.safetensors' not in m['shards']
            assert not (cut/'shard-00002.safetensors').exists()
    r = run_to_end(cmd, env=env, log=tmp_path/'log')
    assert r.returncode == 0, (tmp_path/'log').read_text()[-3000:]
    ref = LatentCache(clean)
    assert cache_problems(cut, ref.load(), ref.manifest()) == []

def test_stale_temporary_shards_are_removed(tmp_path):
    """A SIGKILL while a shard is written leaves its temporary file; the next run should remove it (disk fills up on big
    runs)."""
    from foresight.extraction import cache_latents
    from foresight.data import moving_digits
    (tmp_path/'c').mkdir()
    stale = tmp_path/'c'/'.shard-00000.safetensorsab12cd.tmp'
    stale.write_bytes(b'\x00' * 1000)
    fault()
    cache_latents(moving_digits(2, frames=2, size=28), lambda c: torch.ones(2), tmp_path/'c', shard_size=2,
                  progress=False)
    if stale.exists():
        pytest.xfail("foresight.extraction.cache_latents (lead, nbs/00) leaves stale .shard-*.tmp files of a killed "
                     "run: "
                                    "remove them at start (see the report)")

def test_cache_rerun_on_a_smaller_dataset_drops_stale_shards(tmp_path):
    from foresight.extraction import cache_latents
    from foresight.data import moving_digits
    items = moving_digits(6, frames=2, size=28)
    cache_latents(items, lambda c: torch.ones(2), tmp_path/'c', shard_size=2, progress=False)
    c = cache_latents(items[:3], lambda c: torch.ones(2), tmp_path/'c', shard_size=2, progress=False)
    bad_input()
    extra = sorted(set(c.load()) - {i.id for i in items[:3]})
    if extra:
        pytest.xfail("foresight.extraction.cache_latents (lead, nbs/00) keeps shards beyond the new item list: load() "
                     f"returns {extra}, "
                           f"which are not in the dataset (see the report)")

def test_training_killed_and_resumed(driver, tiny, tmp_path):
    """train_queries: SIGKILL half-way through writing the step-4 checkpoint (the weights written, the
    optimiser state not); the same command then resumes from step 2 and ends with the weights and history
    of an uninterrupted run, bit for bit."""
    from foresight.data import action_world
    from foresight.queries import (query_data, FuturePredictionQueries, train_queries, TrainConfig, checkpoints,
                                   load_queries)
    model, processor, _ = tiny
    ck, mk = tmp_path/'ckpt', tmp_path/'markers'
    mk.mkdir()
    env = dict(ENV, FAULTS='ckpt4-half')
    cmd = [sys.executable, str(driver), 'train', str(ck), str(mk)]
    child = Child(cmd, env=env, log=tmp_path/'log')
    # meanwhile: the reference
    tr = query_data(model, processor, action_world(6, context=2, future=1, size=28, seed=1), offsets=(0,), texts='')
    torch.manual_seed(0)
    q = FuturePredictionQueries.for_model(model, 96, integration='suffix')
    ref = train_queries(q, model, tr, None,
                        TrainConfig(steps=6, batch_size=3, eval_every=2, eval_train=0, progress=False))
    child.kill_at(mk/'ckpt4-half', signal.SIGKILL)
    assert [p.name
            for p in checkpoints(ck)] == ['step-0000002'] and (ck/'.step-0000004.tmp'/'queries.safetensors').exists()
    r = run_to_end(cmd, env=env, log=tmp_path/'log')
    assert r.returncode == 0, (tmp_path/'log').read_text()[-3000:]
    res = json.loads((ck/'result.json').read_text())
    probs = []
    if res['resumed_from'] != 2:
        probs.append(f"resumed from {res['resumed_from']}, not from the last whole checkpoint (2)")
    if [h['train_loss'] for h in res['history']] != [h['train_loss'] for h in ref['history']]:
        probs.append('history differs')
    final = checkpoints(ck)
    if [p.name for p in final] != ['step-0000004', 'step-0000006']:
        probs.append(f'checkpoints {[p.name for p in final]}')
    if any(p.name.endswith('.tmp') for p in ck.iterdir()): probs.append('a half-written checkpoint folder is left')
    # each holds weights, optimiser, scheduler and RNG state
    for p in final:
        from foresight.queries import load_state
        st = load_state(p)                                              # safetensors + JSON: nothing unpickled
        if not {'optimizer', 'scheduler', 'rng', 'step'} <= set(st): probs.append(f'{p.name}: state holds {sorted(st)}')
    got = load_queries(final[-1]).state_dict()
    probs += [f'{k} differs from the uninterrupted run' for k, v in q.state_dict().items()
              if not torch.equal(got[k], v)]
    assert checked(probs, len(final) + 1) == []

TOY = [
    ('code', [],
     "from foresight.findings import check_params, Findings, Int, Str\nimport os, time\nimport numpy as np\nfrom "
     "pathlib import Path\n_before = set(globals())"),
    ('code', ['parameters'], 'x = 1\nseed = 0\nrun_dir = ""'),
    ('code', [], "P = check_params(globals(), _before, dict(x=Int(lo=0), seed=Int(lo=0), run_dir=Str()))"),
    ('code', [], textwrap.dedent('''\
        f = Findings('toy', 'Toy', 'Does it repeat?', P, models=dict(vlm='tiny'), seed=P['seed'], run_dir=P['run_dir'])
        rng = np.random.default_rng(P['seed'])
        f.metric('value', float(rng.normal(size=100).mean() + P['x']), target='> 0',
                 what='planted: mean of 100 seeded normals + x')
        f.value('draws', rng.normal(size=3).tolist()); f.time('work_s', time.time() % 1)
        f.table([dict(x=P['x'])], 'x')
        hold = os.environ.get('RELIABILITY_HOLD', '')
        if hold and int(hold.split(':', 1)[0]) == P['x'] and not Path(hold.split(':', 1)[1]).exists():
            Path(hold.split(':', 1)[1]).write_text(str(os.getpid())); time.sleep(300)
        f.write('Yes.')''')),
]

def toy_value(x, seed=0): return float(np.random.default_rng(seed).normal(size=100).mean() + x)

@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """A one-cell experiment notebook (nbs/00_toy.ipynb → `toy`) and a private reports/ root, with one clean run `a`
    (x=2)."""
    import nbformat
    d = tmp_path_factory.mktemp('toy')
    (d/'nbs').mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata['kernelspec'] = dict(name='python3', display_name='python3', language='python')
    nb.cells = [nbformat.v4.new_code_cell(src, metadata=dict(tags=tags)) for _, tags, src in TOY]
    nbformat.write(nb, d/'nbs'/'00_toy.ipynb')
    env = dict(ENV, FORESIGHT_NBS=str(d/'nbs'), FORESIGHT_REPORTS=str(d/'reports'))
    # runs alongside the tests
    a = Child([str(BIN/'foresight'), 'run', 'toy', '-p', 'x', '2', '--name', 'a', '--quiet'], env=env, log=d/'a.log')
    return dict(dir=d, env=env, reports=d/'reports', a=a)

def clean_run(toy) -> dict:
    "results.json of the uninterrupted run `a` (waiting for it to finish)."
    if 'res' not in toy:
        assert toy['a'].wait() == 0, (toy['dir']/'a.log').read_text()[-3000:]
        toy['res'] = json.loads((toy['reports']/'toy'/'a'/'results.json').read_text())
    return toy['res']

def run_problems(run: Path, want: dict | None = None) -> list:
    "A finished run folder: whole files, no leftovers, and (if given) the figures of a clean run."
    from foresight.findings import diff_results
    probs = []
    for n in ('findings.md', 'results.json', '00_toy.ipynb', 'tables/x.csv'):
        if not (run/n).exists(): probs.append(f'{run.name}/{n}: lost')
    try: res = json.loads((run/'results.json').read_text())
    except Exception as e: return checked(probs + [f'{run.name}/results.json: half-written ({e})'], 4)
    if res.get('status') != 'finished': probs.append(f'{run.name}: status {res.get("status")}')
    if want is not None: probs += [f'{run.name}: {d}' for d in diff_results(want, res)]
    probs += [f'{run.name}/{p.name}: leftover' for p in run.rglob('*.tmp')]
    return checked(probs, 4)

def test_foresight_run_killed_then_rerun(toy):
    """SIGKILL of `foresight run` mid-notebook: `foresight report` lists it as unfinished; the same command again gives
    the clean run's figures."""
    from foresight.cli import collect_runs
    env, rep = dict(toy['env'], RELIABILITY_HOLD=f"2:{toy['dir']/'run-b.marker'}"), toy['reports']
    cmd = [str(BIN/'foresight'), 'run', 'toy', '-p', 'x', '2', '--name', 'b', '--quiet']
    run_until_marker(cmd, toy['dir']/'run-b.marker', signal.SIGKILL, env=env)
    assert (rep/'toy'/'.b.partial').is_dir() and not (rep/'toy'/'b').exists()
    clean_run(toy)
    assert run_to_end([str(BIN/'foresight'), 'report'], env=env).returncode == 0
    idx = (rep/'README.md').read_text()
    assert '[b](' not in idx and '`toy/.b.partial`: interrupted or running' in idx
    assert [r['path'] for r in collect_runs(rep)['finished']] == ['toy/a']
    r = run_to_end(cmd, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (rep/'toy'/'.b.partial').exists() and not (rep/'toy'/'b.failed').exists()
    assert run_problems(rep/'toy'/'b', clean_run(toy)) == []
    assert sorted(r['path'] for r in collect_runs(rep)['finished']) == ['toy/a', 'toy/b']

def test_sweep_interrupted_then_rerun(toy):
    "SIGINT of `foresight sweep` during its second point: the first is kept (not recomputed), the second redone."
    from foresight.cli import collect_runs
    env, rep = dict(toy['env'], RELIABILITY_HOLD=f"3:{toy['dir']/'sweep.marker'}"), toy['reports']
    cmd = [str(BIN/'foresight'), 'sweep', 'toy', '-g', 'x=1,3', '--name', 's']
    rc = run_until_marker(cmd, toy['dir']/'sweep.marker', signal.SIGINT, env=env)
    s = rep/'toy'/'s'
    assert rc == 130 and (s/'x=1'/'results.json').exists() and (s/'x=3.failed').is_dir() and not (s/'x=3').exists()
    assert not (s/'sweep.json').exists()
    fin = {r['path'] for r in collect_runs(rep)['finished']}
    assert 'toy/s/x=1' in fin and not any('x=3' in p for p in fin)
    t1 = (s/'x=1'/'results.json').stat().st_mtime_ns
    r = run_to_end(cmd, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((s/'sweep.json').read_text())
    probs = [] if (s/'x=1'/'results.json').stat().st_mtime_ns == t1 else ['x=1 was recomputed']
    if (s/'x=3.failed').exists(): probs.append('x=3.failed left behind after x=3 finished')
    if out['failures'] or [p['point'] for p in out['results']] != [{'x': 1}, {'x': 3}]:
        probs.append(f"sweep.json: {out['failures']}, {[p['point'] for p in out['results']]}")
    for x in (1, 3):
        probs += run_problems(s/f'x={x}')
        got = json.loads((s/f'x={x}'/'results.json').read_text())['metrics']['value']['value']
        if got != toy_value(x): probs.append(f'x={x}: value {got} != {toy_value(x)}')
    assert checked(probs, 1) == []

def test_sweep_refuses_to_reuse_runs_made_with_other_parameters(toy, monkeypatch):
    "A finished sweep point is reused only for the parameters it was run with (no silent reuse after -p seed 5)."
    from foresight import cli
    monkeypatch.setenv('FORESIGHT_NBS', str(toy['dir']/'nbs'))
    monkeypatch.setenv('FORESIGHT_REPORTS', str(toy['reports']))
    pt = toy['reports']/'toy'/'planted'/'x=1'
    pt.mkdir(parents=True)
    (pt/'results.json').write_text(json.dumps(dict(status='finished', cli=dict(params=dict(x=1)))))
    bad_input()
    with pytest.raises(cli.CLIError, match='holds a finished run with other parameters'):
        cli.sweep('toy', dict(x=[1]), dict(seed=5), name='planted')
    # the same parameters: reused, not rerun
    assert cli.sweep('toy', dict(x=[1]), name='planted')['results'][0]['point'] == {'x': 1}

# ===================================================================================================
# 3. Untrusted files

RISKY_LOADERS = {'pickle.load', 'pickle.loads', 'cPickle.load', 'cPickle.loads', 'dill.load', 'dill.loads',
                 'joblib.load',
                 'pd.read_pickle', 'pandas.read_pickle', 'torch.jit.load', 'pickle.Unpickler', 'shelve.open',
                 'marshal.loads', 'marshal.load'}

def _dotted(n):
    if isinstance(n, ast.Name): return n.id
    if isinstance(n, ast.Attribute): return f'{_dotted(n.value)}.{n.attr}'
    return ''

def unsafe_loads(src: str, fname: str = '<src>') -> list:
    """Calls in `src` that can run code from a file: `torch.load` without `weights_only=True`, pickle and
    friends (an `Unpickler` subclass must override `find_class`), `np.load(allow_pickle=True)`, `yaml.load`
    without a safe loader, and `trust_remote_code=True` (or a `trust_remote_code` parameter that defaults to True)."""
    out = []
    tree = ast.parse(src)
    true = lambda v: isinstance(v, ast.Constant) and v.value is True
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name, kw = _dotted(node.func), {k.arg: k.value for k in node.keywords}
            where = f'{fname}:{node.lineno}'
            if name.endswith('torch.load'):
                if not true(kw.get('weights_only')): out.append(f'{where}: {name} without weights_only=True')
            elif name in RISKY_LOADERS: out.append(f'{where}: {name}')
            elif name in ('np.load', 'numpy.load') and true(kw.get('allow_pickle')):
                out.append(f'{where}: {name}(allow_pickle=True)')
            elif name == 'yaml.load' and 'Safe' not in ast.unparse(kw.get('Loader', ast.Constant(''))):
                out.append(f'{where}: yaml.load without SafeLoader')
            if true(kw.get('trust_remote_code')): out.append(f'{where}: trust_remote_code=True')
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            defaults = dict(zip([x.arg for x in pos][len(pos) - len(a.defaults):], a.defaults)) | {x.arg: d
                    for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None}
            if true(defaults.get('trust_remote_code')):
                out.append(f'{fname}:{node.lineno}: {node.name}(trust_remote_code=True by default)')
        if isinstance(node, ast.ClassDef) and any(_dotted(b).endswith('Unpickler') for b in node.bases):
            if not any(isinstance(b, ast.FunctionDef) and b.name == 'find_class' for b in node.body):
                out.append(f'{fname}:{node.lineno}: {node.name} unpickles without restricting find_class')
        if isinstance(node, ast.ImportFrom) and node.module in ('pickle', 'torch', 'dill') and any(a.name in ('load',
                'loads') for a in node.names):
            out.append(f'{fname}:{node.lineno}: from {node.module} import {", ".join(a.name for a in node.names)}')
    return out

def test_the_scanner_catches_what_it_should():
    planted = textwrap.dedent('''\
        import torch, pickle, numpy as np, yaml
        a = torch.load(p)
        b = torch.load(p, weights_only=False)
        c = pickle.load(f)
        d = np.load(p, allow_pickle=True)
        e = yaml.load(s)
        m = AutoModel.from_pretrained(n, trust_remote_code=True)
        def load(n, trust_remote_code=True): pass
        class U(pickle.Unpickler): pass
        from pickle import loads
        ok1 = torch.load(p, weights_only=True, map_location='cpu')
        ok2 = np.load(p); ok3 = yaml.load(s, Loader=yaml.SafeLoader); ok4 = load_vlm(n, trust_remote_code=trc)
        class V(pickle.Unpickler):
            def find_class(self, m, n): raise pickle.UnpicklingError(n)
        ''')
    found = sorted(unsafe_loads(planted), key=lambda f: int(f.split(':')[1]))
    assert [int(f.split(':')[1]) for f in found] == list(range(2, 11)), found

# Code-bearing loaders that run only on an explicit user opt-in: (file, call) -> why it is allowed.
OPT_IN = {('reconstruction.py', 'torch.jit.load'): "fvd(): the TorchScript I3D for FVD, loaded only from a path the "
                                                   "user passes (i3d=...); nothing by default"}

def test_package_loads_nothing_that_can_run_code():
    """Every foresight/*.py: torch.load only with weights_only=True, no pickle, no trust_remote_code unless the user
    passes it."""
    found = [f for p in sorted((ROOT/'foresight').glob('*.py')) for f in unsafe_loads(p.read_text(), p.name)]
    found = [f for f in found if (f.split(':')[0], f.split(': ', 1)[1]) not in OPT_IN]
    assert found == [], found
    from foresight.models import load_vlm
    assert inspect.signature(load_vlm).parameters['trust_remote_code'].default is False

class _Payload:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def test_a_poisoned_checkpoint_does_not_run(tmp_path):
    "A checkpoint whose state.pt carries code: refused, and the code never runs."
    from foresight.queries import FuturePredictionQueries, save_queries, load_checkpoint
    d = tmp_path/'step-0000001'
    d.mkdir()
    q = FuturePredictionQueries(8, 8)
    save_queries(q, d/'queries.safetensors')
    torch.save(dict(step=1, optimizer={}, scheduler={}, history=[], rng=dict(cpu=torch.get_rng_state(), cuda=[]),
                    extra=_Payload(tmp_path/'pwned')), d/'state.pt')
    bad_input()
    with pytest.raises(Exception) as e: load_checkpoint(d, q)
    # issue 18.7: the file named and why it is refused; not torch's advice to pass weights_only=False
    msg = str(e.value)
    assert str(d/'state.pt') in msg and ('not a tensor file' in msg
                                         or 'never' in msg) and 'weights_only=False' not in msg, msg
    assert not (tmp_path/'pwned').exists()

def test_damaged_shards_and_checkpoints_fail_loudly(tmp_path):
    "A damaged safetensors file is never read as data: loading it raises."
    from foresight.extraction import cache_latents, LatentCache
    from foresight.data import moving_digits
    cache_latents(moving_digits(3, frames=2, size=28), lambda c: torch.ones(2), tmp_path/'c', shard_size=2,
                  progress=False)
    s = tmp_path/'c'/'shard-00000.safetensors'
    s.write_bytes(s.read_bytes()[:40])
    bad_input()
    with pytest.raises(Exception): LatentCache(tmp_path/'c').load()

EVIL_NAMES = ['../x', '..', '../../etc/cron.d/x', '/etc/passwd', 'a/../../b', 'a/b', '.hidden', '', ' x', 'x\x00y',
              'a\nb', '~root', 'C:\\x', 'x' * 200]

def test_names_and_paths_cannot_escape_reports(tmp_path, monkeypatch):
    from foresight.findings import safe_name, resolve_run_dir, Findings
    from foresight.extraction import cache_key
    from foresight import cli
    rep = tmp_path/'reports'
    monkeypatch.setenv('FORESIGHT_REPORTS', str(rep))
    for n in EVIL_NAMES:
        bad_input()
        with pytest.raises(ValueError): safe_name(n)
    # (the temp dir is allowed, for tests)
    for d in ['../' * 12 + 'etc/x', '/etc/foresight', 'a/' + '../' * 12 + 'usr', str(Path.home()/'x')]:
        bad_input()
        with pytest.raises(ValueError, match='outside'): resolve_run_dir('exp', d)
    rep.mkdir(parents=True, exist_ok=True)
    (rep/'link').symlink_to('/')
    bad_input()
    with pytest.raises(ValueError, match='outside'): resolve_run_dir('exp', 'link/etc')
    f = Findings('exp', 'T', 'Q?', {}, run_dir='exp/r')
    for n in ['../../x', 'a/b']:
        bad_input(2)
        with pytest.raises(ValueError): f.table([dict(a=1)], n)
        with pytest.raises(ValueError): cache_key('tiny', n)
    for args in (['run', 'extraction', '--name', '../../escape'], ['run', 'extraction', '--name', 'x.partial'],
                 ['sweep', 'extraction', '-g', 'n_clips=1', '--name', '/abs']):
        bad_input()
        assert cli.main(args) == 2
    # does not follow the link
    made = sorted(os.path.relpath(os.path.join(d, n), tmp_path) for d, ds, fs in os.walk(tmp_path) for n in ds + fs)
    assert made == ['reports', 'reports/exp', 'reports/exp/r', 'reports/link'], made
    assert all('/' not in cli.point_name({'dataset': n, 'k': 1}) for n in EVIL_NAMES)

# ===================================================================================================
# 4. Determinism: same seed and preset, same figures (CPU: exactly)

def test_same_params_same_results_through_foresight_run(toy):
    "Two runs of a notebook through `foresight run`: every figure equal, only timings, dates and paths differ."
    from foresight.findings import diff_results
    a = clean_run(toy)
    # the rerun of the interruption test is the second run when it ran
    if not (toy['reports']/'toy'/'b'/'results.json').exists():
        r = run_to_end([str(BIN/'foresight'), 'run', 'toy', '-p', 'x', '2', '--name', 'b', '--quiet'], env=toy['env'])
        assert r.returncode == 0, r.stderr[-2000:]
    b = json.loads((toy['reports']/'toy'/'b'/'results.json').read_text())
    assert diff_results(a, b) == [] and a['metrics']['value']['value'] == toy_value(2)
    assert a['date'] != b['date'] or a['run'] != b['run']                        # they really are two runs

def test_same_seed_same_latents_and_training(tiny):
    "The library calls an experiment makes, repeated with fresh seeded models: bit-for-bit equal on a CPU."
    from foresight.models import load_vlm, load_video_vae
    from foresight.data import action_world, positioned_objects
    from foresight.extraction import extract_vision, extract_llm_hidden, encode_video_vae
    from foresight.queries import query_data, FuturePredictionQueries, train_queries, TrainConfig
    model, processor, vae = tiny
    m2, p2 = load_vlm('tiny')
    v2 = load_video_vae('tiny')
    clip = action_world(1, context=4, future=1, size=56, seed=3)[0]
    for a, b in [(extract_vision(model, processor, clip.frames, blocks=(3,)),
                  extract_vision(m2, p2, clip.frames, blocks=(3,)))]:
        assert torch.equal(a.pre_merge, b.pre_merge) and torch.equal(a.post_merge, b.post_merge)
        assert torch.equal(a.blocks[3], b.blocks[3])
    assert torch.equal(extract_llm_hidden(model, processor, clip, layers=(-1,))[-1],
                       extract_llm_hidden(m2, p2, clip, layers=(-1,))[-1])
    f9 = _clip(frames=9, size=64)
    assert torch.equal(encode_video_vae(vae, f9), encode_video_vae(v2, f9))
    assert all(np.array_equal(a.frames, b.frames)
               for a, b in zip(positioned_objects(3, seed=4), positioned_objects(3, seed=4)))
    tr = query_data(model, processor, action_world(4, context=2, future=1, size=28, seed=1), offsets=(0,), texts='')
    ws = []
    for m in (model, m2):
        torch.manual_seed(0)
        q = FuturePredictionQueries.for_model(m, 96, integration='cross_attention')
        train_queries(q, m, tr, None, TrainConfig(steps=3, batch_size=2, eval_every=3, eval_train=0, progress=False))
        ws.append(q.state_dict())
    assert all(torch.equal(ws[0][k], ws[1][k]) for k in ws[0])

@pytest.mark.slow
@pytest.mark.skipif(os.environ.get('FORESIGHT_SLOW') != '1',
                    reason='two runs of 00_extraction (~25 s each on an idle 2-core CPU, more under load): '
                           'FORESIGHT_SLOW=1 to run')
def test_extraction_notebook_repeats(tmp_path):
    "The real 00_extraction notebook twice through `foresight run`, same seed and preset: identical figures."
    from foresight.findings import diff_results
    env = dict(ENV, FORESIGHT_REPORTS=str(tmp_path))
    for n in ('one', 'two'):
        r = run_to_end([str(BIN/'foresight'), 'run', 'extraction', '-p', 'n_clips', '3', '-p', 'resolutions', '56',
                        '--name', n, '--quiet'], env=env, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((tmp_path/'extraction'/n/'results.json').read_text()) for n in ('one', 'two'))
    vol = [k for k in a['metrics'] if '/s' in k]    # throughput, until 00 marks it volatile=True
    for res in (a, b):
        for k in vol: res['metrics'].pop(k)
    assert diff_results(a, b) == []

# ===================================================================================================
# 5. Issue 18: the holes a run of 45 bad inputs and 7 injected faults left open. Each test failed on 58eeaf8.

def gif_bomb(path, w=16000, h=16000, frames=40) -> Path:
    "959 bytes that declare 40 frames of 16000x16000 px: each 1-px frame decodes to the whole 768 MB screen."
    import struct
    b = bytearray(b'GIF89a') + struct.pack('<HHBBB', w, h, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
    b += b'\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00'
    for _ in range(frames):
        b += b'\x21\xf9\x04\x04\x0a\x00\x00\x00\x2c' + struct.pack('<HHHHB', 0, 0, 1, 1, 0) + b'\x02\x02\x44\x01\x00'
    Path(path).write_bytes(bytes(b + b'\x3b'))
    return Path(path)

BOMB_CHILD = r'''
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (4000000 * 1024, 4000000 * 1024))       # ulimit -v 4000000
from foresight.data import read_video, load_refs, folder_refs, VideoError
out = {}
t0 = time.time()
try: read_video(sys.argv[1]); out['read'] = 'frames came back'
except VideoError as e: out['read'] = f'VideoError: {e}'
except BaseException as e: out['read'] = f'{type(e).__name__}: {e}'
out['seconds'] = time.time() - t0
try:
    clips, skipped = load_refs(folder_refs(sys.argv[2]))
    out['kept'], out['skipped'] = sorted(c.id for c in clips), skipped
except BaseException as e: out['load_refs'] = f'{type(e).__name__}: {e}'
print(json.dumps(out))
'''

def test_decompression_bomb_is_refused_by_name_under_a_memory_limit(tmp_path):
    """Issue 18.1: the GIF bomb, under `ulimit -v 4000000`: a VideoError naming it within a second; a folder load keeps
    the good files."""
    from foresight.data import write_video
    d = tmp_path/'clips'
    d.mkdir()
    bomb = gif_bomb(d/'bomb.gif')
    assert bomb.stat().st_size == 959
    for i in range(2): write_video(d/f'ok{i}.mp4', _clip(frames=4))
    bad_input()
    fault()                                                             # the bomb, and the memory limit
    r = run_to_end([sys.executable, '-c', BOMB_CHILD, str(bomb), str(d)], timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out['read'].startswith('VideoError: ') and 'bomb.gif' in out['read'], out
    assert 'refused before decoding' in out['read'], out
    assert out['seconds'] < 1, out
    assert out.get('kept') == ['folder-ok0', 'folder-ok1'] and list(out['skipped']) == ['folder-bomb'], out

def test_frames_beyond_the_budget_are_refused_while_decoding(tmp_path, monkeypatch):
    """Issue 18.1: a container that declares no count is held to the budget frame by frame; running out of memory is
    named."""
    import foresight.data as D
    from foresight.data import read_video, write_video, VideoError
    p = write_video(tmp_path/'ten.gif', _clip(frames=10))
    bad_input(2)
    monkeypatch.setattr(D, '_expected_frames', lambda *a: None)                      # as if the header said nothing
    with pytest.raises(VideoError, match='ten.gif: refused while decoding: it holds at least 5 frame'):
        read_video(p, max_pixels=56 * 56 * 4)
    def oom(*a, **k): raise MemoryError()
    monkeypatch.setattr(np, 'stack', oom)
    fault()
    with pytest.raises(VideoError, match='ten.gif: ran out of memory'): read_video(p)

def _write_folder_of_14(d: Path) -> list:
    "8 good clips and 6 broken files (empty, text, noise, PNG bytes, a half avi, the GIF bomb); the broken names."
    from foresight.data import write_video
    d.mkdir(parents=True)
    for i in range(8): write_video(d/f'good{i}.mp4', _clip(frames=4, seed=i))
    (d/'empty.mp4').write_bytes(b'')
    (d/'text.mp4').write_bytes(b'hello, not a video')
    (d/'noise.webm').write_bytes(np.random.default_rng(0).bytes(5000))
    (d/'png.avi').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))
    half = write_video(d/'half.avi', _clip(frames=12))
    half.write_bytes(half.read_bytes()[:half.stat().st_size // 2])
    gif_bomb(d/'bomb.gif')
    return ['bomb', 'empty', 'half', 'noise', 'png', 'text']

def test_extraction_key_metric_counts_files_that_failed_to_decode(tmp_path):
    """Issue 18.2: 00_extraction on a folder of 14 files, 6 broken: the key metric says 6 (FAIL), as results.json's
    n_skipped does."""
    broken = _write_folder_of_14(tmp_path/'data')
    bad_input(len(broken))
    env = dict(ENV, FORESIGHT_REPORTS=str(tmp_path/'reports'))
    cmd = [str(BIN/'foresight'), 'run', 'extraction', '-p', 'dataset', str(tmp_path/'data'), '-p', 'n_clips', '14',
           '-p', 'frames', '2',
           '-p', 'size', '56', '-p', 'resolutions', '56', '-p', 'layer', 'post_merge,llm:-1', '--name', 'r', '--quiet']
    r = run_to_end(cmd, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'reports'/'extraction'/'r'/'results.json').read_text())
    m = res['metrics']['skipped clips']
    assert res['n_skipped'] == 6 and sorted(s['item'].removeprefix('folder-')
                                            for s in res['skipped']) == broken, res['skipped']
    assert (m['value'], m['verdict']) == (6, 'FAIL') and res['recommendation'] != 'PROCEED', (m, res['recommendation'])
    assert res['metrics']['cached clips']['value'] == 8

def test_relative_run_dirs_stay_inside_reports_even_in_a_checkout_under_tmp(tmp_path, monkeypatch):
    """Issue 18.3: in a checkout under /tmp, `..` and `../x` climbed out of reports/ (the temp-dir exception covered
    them)."""
    from foresight.findings import resolve_run_dir, Findings
    checkout = tmp_path/'checkout'
    (checkout/'reports').mkdir(parents=True)
    monkeypatch.setenv('FORESIGHT_REPORTS', str(checkout/'reports'))
    for d in ['..', '../x', '.', 'e1_2_probe/../../x', 'a/../../..']:
        bad_input()
        with pytest.raises(ValueError, match='outside'): resolve_run_dir('e1_2_probe', d)
    bad_input()
    with pytest.raises(ValueError, match='outside'):
        Findings('e1_2_probe', 'T', 'Q?', dict(run_dir='../x'), run_dir='../x')   # what papermill -p run_dir ../x does
    assert sorted(p.name for p in checkout.iterdir()) == ['reports'] and list((checkout/'reports').iterdir()) == []
    assert resolve_run_dir('e1_2_probe', 'e1_2_probe/ok') == (checkout/'reports'/'e1_2_probe'/'ok').resolve()
    # an absolute temp folder (tests) is still allowed
    assert resolve_run_dir('e1_2_probe', str(tmp_path/'abs')).is_dir()

NB02 = ROOT/'nbs'/'02_e1_2_probe.ipynb'

def test_a_bad_layer_stops_papermill_at_the_validation_cell(tmp_path):
    "Issue 18.4: `papermill 02 -p layer 99` stops in the validation cell: no run folder, no model loaded."
    run = tmp_path/'reports'/'e1_2_probe'/'r99'
    out = tmp_path/'o.ipynb'
    bad_input()
    env = dict(ENV, FORESIGHT_REPORTS=str(tmp_path/'reports'))
    r = run_to_end([str(BIN/'papermill'), str(NB02), str(out), '-p', 'layer', '99', '-p', 'run_dir', str(run), '--cwd',
                    str(NB02.parent)],
                   env=env, timeout=600)
    assert r.returncode != 0 and 'blocks 0..31' in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert not run.exists() and not (tmp_path/'reports').exists()
    import nbformat
    cells = [c for c in nbformat.read(str(out), as_version=4).cells if c.cell_type == 'code']
    failed = [i for i, c in enumerate(cells) if any(o.get('output_type') == 'error' for o in c.get('outputs', []))]
    # the validation cell, nothing after it ran
    assert len(failed) == 1 and 'check_params(' in cells[failed[0]].source, failed

def test_foresight_run_and_sweep_check_names_and_values_before_anything_starts(tmp_path, monkeypatch):
    """Issue 18.4: `foresight run -p layer 99` and a sweep over a misspelt factor or a bad value are refused before any
    folder or kernel."""
    import papermill as pm
    from foresight import cli
    monkeypatch.setenv('FORESIGHT_REPORTS', str(tmp_path/'reports'))
    started = []
    monkeypatch.setattr(pm, 'execute_notebook', lambda *a,
                        **k: started.append(a) or (_ for _ in ()).throw(AssertionError('a kernel started')))
    t0 = time.time()
    bad_input()
    with pytest.raises(cli.CLIError, match=r"layer='?99'? is not allowed: .*blocks 0\.\.31"):
        cli.run_experiment('e1_2', dict(layer=99))
    assert time.time() - t0 < 30
    for args in (['sweep', 'e1_2', '-g', 'lyr=1,2'], ['sweep', 'e1_2', '-g', 'layer=1,99'],
                 ['run', 'e1_2', '-p', 'lyr', '3']):
        bad_input()
        assert cli.main(args) == 2, args
    assert started == [] and not (tmp_path/'reports').exists()
    with pytest.raises(cli.CLIError, match=r'lyr \(did you mean layer\?\)'): cli.sweep('e1_2', dict(lyr=[1, 2]))

def test_lyr_suggests_layer():
    "Issue 18.7: the did-you-mean hint ranks over all names: `lyr` gets `layer`, not `lr`."
    from foresight.findings import check_params, Int, Float, ParamError
    bad_input()
    with pytest.raises(ParamError, match=r'lyr \(did you mean layer\?\)'):
        check_params(dict(layer=1, lr=0.1, lyr=2), set(), dict(layer=Int(), lr=Float()))
    from foresight.findings import closest_names
    assert closest_names('lyr', ['lr', 'layer', 'lpips_weight', 'global_rank']) == ['layer'] and closest_names('lrr',
            ['lr', 'layer']) == ['lr']

def _faststart_mp4(path, frames=132, size=56) -> Path:
    "An mp4 with its index first (as streaming sites serve it): cut short, it still opens and decodes what is left."
    import av
    with av.open(str(path), 'w', options={'movflags': 'faststart'}) as c:
        s = c.add_stream('libx264', rate=8)
        s.width = s.height = size
        s.pix_fmt = 'yuv420p'
        for fr in _clip(frames=frames, size=size):
            for p in s.encode(av.VideoFrame.from_ndarray(fr, format='rgb24')): c.mux(p)
        for p in s.encode(): c.mux(p)
    return Path(path)

def test_missing_frames_warn_and_are_recorded_in_the_findings(tmp_path):
    """Issue 18.5: an mp4 cut near its end returned fewer of its 132 frames without a word; now a warning, and a note in
    the report."""
    from foresight.data import read_video, folder_refs, load_refs
    from foresight.findings import Findings
    full = _faststart_mp4(tmp_path/'full.mp4')
    d = tmp_path/'data'
    d.mkdir()
    cut = d/'cut.mp4'
    cut.write_bytes(full.read_bytes()[:int(full.stat().st_size * 0.99)])
    bad_input()
    f = Findings('demo', 'Demo', 'Whole clips?', {}, run_dir=tmp_path/'run')
    with pytest.warns(UserWarning, match=r'cut\.mp4: decoded \d+ of the 132 frames') as w: n = len(read_video(cut))
    assert n < 132 and f'decoded {n} of the 132' in str(w[0].message)
    assert w[0].category.__name__ == 'MissingFramesWarning'
    with pytest.warns(UserWarning, match='cut.mp4: decoded'): clips, skipped = load_refs(folder_refs(d))
    assert [len(c.frames) for c in clips] == [n] and skipped == {}                  # kept, and said
    f.write('Mostly.')
    md = (tmp_path/'run'/'findings.md').read_text()
    assert f'cut.mp4: decoded {n} of the 132 frames its header declares' in md and '## Notes' in md
    # a whole file: no warning (pytest errors on one below)
    assert len(read_video(full)) == 132
    from foresight.data import MissingFramesWarning
    with warnings.catch_warnings():
        warnings.simplefilter('error', MissingFramesWarning)
        read_video(full)

def test_reports_name_the_final_run_folder(toy):
    "Issue 18.6: params.run_dir in results.json and findings.md pointed at the deleted .partial folder."
    a = clean_run(toy)
    final = toy['reports']/'toy'/'a'
    md = (final/'findings.md').read_text()
    probs = [] if a['params']['run_dir'] == str(final) == a['run_dir'] else [f"params.run_dir {a['params']['run_dir']}"]
    if '.partial' in md or json.dumps(str(final)) not in md: probs.append('findings.md names the .partial folder')
    assert checked(probs, 2) == []

def test_foresight_run_refuses_run_dir(toy, monkeypatch):
    "Issue 18.6: `foresight run -p run_dir X` was ignored silently; it is refused, pointing at --name."
    from foresight import cli
    monkeypatch.setenv('FORESIGHT_NBS', str(toy['dir']/'nbs'))
    monkeypatch.setenv('FORESIGHT_REPORTS', str(toy['reports']))
    before = sorted(p.name for p in (toy['reports']/'toy').iterdir()) if (toy['reports']/'toy').exists() else []
    bad_input()
    with pytest.raises(cli.CLIError, match='--name'): cli.run_experiment('toy', dict(x=1, run_dir='X'), name='rd')
    assert cli.main(['run', 'toy', '-p', 'run_dir', 'X', '--name', 'rd', '--quiet']) == 2
    after = sorted(p.name for p in (toy['reports']/'toy').iterdir()) if (toy['reports']/'toy').exists() else []
    assert after == before and not (toy['reports']/'X').exists()

def test_recomputed_shards_are_not_reported_as_read_from_the_cache(tiny, tmp_path):
    """Issue 18.6: after a damaged shard was recomputed, E1.2 said 'latents read from the cache'; now the damaged shard
    is recomputed."""
    from foresight.data import positioned_objects
    from foresight.extraction import LatentCache, latents
    model, processor, _ = tiny
    ims = positioned_objects(3, size=56, seed=0)
    ids = [c.id for c in ims]
    c1 = latents(model, processor, ims, 'post_merge', tmp_path)
    z1, z2 = c1.stack(ids), latents(model, processor, ims, 'post_merge', tmp_path).stack(ids)
    assert torch.equal(z1, z2)
    shard = next(c1.root.glob('shard-*.safetensors'))
    shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
    fault()
    assert not LatentCache(c1.root).complete
    z3 = latents(model, processor, ims, 'post_merge', tmp_path).stack(ids)
    assert torch.equal(z3, z1)
    assert checked([] if LatentCache(c1.root).complete else ['the recomputed cache is not complete'], 1) == []

def test_a_damaged_manifest_is_named(tmp_path):
    "Issue 18.7: a damaged manifest.json gave a bare JSONDecodeError with no path."
    from foresight.extraction import cache_latents, LatentCache
    from foresight.data import moving_digits
    items = moving_digits(3, frames=2, size=28)
    cache_latents(items, lambda c: torch.ones(2), tmp_path/'c', shard_size=2, progress=False)
    m = tmp_path/'c'/'manifest.json'
    for damage in (m.read_text()[:len(m.read_text()) // 2], '[1, 2]', '\xff\xfe'):
        m.write_text(damage)
        fault()
        with pytest.raises(OSError, match='manifest.json: damaged cache manifest') as e:
            LatentCache(tmp_path/'c').load()
        assert str(m) in str(e.value)
        with pytest.raises(OSError, match='manifest.json'):
            cache_latents(items, lambda c: torch.ones(2), tmp_path/'c', shard_size=2, progress=False)
