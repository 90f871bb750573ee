"""Property-based tests (hypothesis), bounded in time: the video/image readers and parameter validation.

Whatever goes in, what comes out is either well-formed (frames `(T, H, W, 3) uint8`, a cleaned parameter)
or a clean, named error (`VideoError`, `ParamError`): never another exception. Examples are derandomised
and few (30 each, a few seconds per test) so CI is fast and repeatable; `FORESIGHT_HYPOTHESIS=explore`
runs 500 random examples each.
"""
import math, os, string

import numpy as np
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from foresight.data import VideoError, as_frames, read_image, read_video, write_video, smart_size
from foresight.findings import (ParamError, Int, Float, Bool, Str, Choice, Ints, Strs, check_params, safe_name,
                                resolve_run_dir)
from test_reliability import reliability_summary, bad_input  # noqa: F401  (the session summary counts these too)

settings.register_profile('ci', max_examples=30, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                 HealthCheck.data_too_large])
settings.register_profile('explore', max_examples=500, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                 HealthCheck.data_too_large])
settings.load_profile(os.environ.get('FORESIGHT_HYPOTHESIS', 'ci'))

def frames_ok(v, T=None, H=None, W=None):
    assert isinstance(v, np.ndarray) and v.dtype == np.uint8, (type(v), getattr(v, 'dtype', None))
    assert v.ndim == 4 and v.shape[-1] == 3 and min(v.shape) >= 1, v.shape
    for got, want in zip(v.shape[:3], (T, H, W)):
        if want is not None: assert got == want, (v.shape, (T, H, W))

# ---------------------------------------------------------------------------------------------------
# Arrays: as_frames either returns frames or refuses with a VideoError

DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]

@st.composite
def arrays(draw):
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.lists(st.integers(0, 7), min_size=1, max_size=5).map(tuple))
    return draw(hnp.arrays(dt, shape,
                           elements=hnp.from_dtype(dt, allow_nan=True, allow_infinity=True) if dt.kind == 'f'
                           else None))

@given(arrays())
def test_as_frames_frames_or_videoerror(a):
    try: v = as_frames(a, 'fuzz')
    except VideoError as e:
        assert 'fuzz' in str(e)
        bad_input()
        return
    frames_ok(v)
    # already frames: untouched
    if a.dtype == np.uint8 and a.ndim == 4 and a.shape[-1] == 3: assert np.array_equal(v, a)

# ---------------------------------------------------------------------------------------------------
# Videos written in random shapes, channel counts, dtypes and frame counts, read back

CODECS = ['mp4', 'webm', 'avi', 'gif']

@st.composite
def clips(draw):
    T, H, W = draw(st.integers(1, 5)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
    C = draw(st.sampled_from([None, 1, 3, 4]))
    dt = draw(st.sampled_from([np.uint8, np.uint16, np.float32]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    shape = (T, H, W) + ((C,) if C else ())
    a = rng.random(shape)
    scale = {np.uint8: 255, np.uint16: 65535}.get(dt)
    a = (a * scale).astype(dt) if scale else a.astype(np.float32)
    return a, draw(st.sampled_from(CODECS)), draw(st.floats(1, 30))

@given(clips())
def test_write_then_read_video(tmp_path_factory, clip):
    a, ext, fps = clip
    p = tmp_path_factory.mktemp('v')/f'clip.{ext}'
    try: write_video(p, a, fps=fps)
    except VideoError as e:
        assert str(p) in str(e) and (min(a.shape[1:3]) < 2 or a.shape[0] == 0), str(e)
        bad_input()
        return
    assert not any(q.name.startswith('.') for q in p.parent.iterdir())          # no temporary file left
    T, H, W = a.shape[:3]
    v = read_video(p)
    frames_ok(v, None, H - H % 2, W - W % 2)
    assert v.shape[0] == T or ext == 'gif' and 1 <= v.shape[0] <= T             # gif may merge identical frames

@given(st.binary(min_size=0, max_size=3000), st.sampled_from(CODECS + ['mkv', 'mov']),
       st.sampled_from([b'', b'\x1aE\xdf\xa3', b'RIFF', b'\x00\x00\x00\x18ftypisom', b'GIF89a']))
def test_garbage_with_a_video_name(tmp_path_factory, data, ext, magic):
    """Random bytes (behind a real container signature or not) named like a video: a VideoError naming the file, or
    frames."""
    p = tmp_path_factory.mktemp('g')/f'junk.{ext}'
    p.write_bytes(magic + data)
    try: v = read_video(p)
    except VideoError as e:
        assert 'junk.' in str(e)
        bad_input()
        return
    frames_ok(v)

@given(st.integers(0, 2 ** 16), st.floats(0.0, 1.0), st.sampled_from(['mp4', 'webm', 'avi']))
def test_truncated_anywhere(tmp_path_factory, seed, cut, ext):
    "A valid video cut at any byte: a VideoError, or exactly the whole clip when the cut only lost trailing metadata."
    d = tmp_path_factory.mktemp('t')
    rng = np.random.default_rng(seed)
    full = write_video(d/f'full.{ext}', rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), fps=6)
    b = full.read_bytes()
    p = d/f'cut.{ext}'
    p.write_bytes(b[:int(len(b) * cut)])
    try: v = read_video(p)
    except VideoError as e:
        assert 'cut.' in str(e)
        bad_input()
        return
    frames_ok(v, None, 32, 32)
    assert v.shape[0] >= 5, f'{v.shape[0]} of 6 frames passed off as a whole clip'   # at most the tolerated last frame

# ---------------------------------------------------------------------------------------------------
# Images through PIL in every mode it writes

MODES = {'L': (None, np.uint8), 'RGB': (3, np.uint8), 'RGBA': (4, np.uint8), 'LA': (2, np.uint8),
         'I;16': (None, np.uint16), 'P': (None, np.uint8)}
LOSSLESS = {'png', 'tiff', 'bmp'}

@given(st.sampled_from(sorted(MODES)), st.sampled_from(['png', 'tiff', 'bmp', 'jpg', 'webp']), st.integers(1, 48),
       st.integers(1, 48), st.integers(0, 2 ** 16))
def test_images_in_any_mode(tmp_path_factory, mode, ext, h, w, seed):
    from PIL import Image
    C, dt = MODES[mode]
    rng = np.random.default_rng(seed)
    a = rng.integers(0, np.iinfo(dt).max, (h, w) + ((C,) if C else ()), dtype=dt, endpoint=True)
    # opaque: the colours must come back as they were
    if mode in ('RGBA', 'LA'): a[..., -1] = 255
    p = tmp_path_factory.mktemp('i')/f'img.{ext}'
    try: Image.fromarray(a, mode).save(p)
    # PIL cannot write this mode in this format
    except (OSError, ValueError, KeyError): assume(False)
    try: v = read_image(p)
    except VideoError as e:
        assert 'img.' in str(e)
        bad_input()
        return
    frames_ok(v, 1, h, w)
    if ext in LOSSLESS and mode in ('L', 'RGB', 'RGBA'):
        with Image.open(p) as im: stored = np.asarray(im)
        want = stored[..., :3] if stored.ndim == 3 else np.repeat(stored[..., None], 3, -1)
        if stored.shape[:2] == (h, w) and stored.dtype == np.uint8: assert np.array_equal(v[0], want)

# ---------------------------------------------------------------------------------------------------
# Parameters: a cleaned value or a ParamError, never anything else

values = st.recursive(st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 400) | st.floats(allow_nan=True,
        allow_infinity=True)
                      | st.text(max_size=30) | st.text(alphabet='0123456789-, .e+', max_size=30),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                              max_size=3), max_leaves=6)

SPECS = {'i': Int(lo=0, hi=100), 'm': Int(multiple=28), 'f': Float(lo=0), 'b': Bool(), 's': Str('a', 'b'), 'any': Str(),
         'c': Choice(Int(lo=0), 'pre_merge', 'post_merge'), 'ii': Ints(lo=-1), 'ie': Ints(allow_empty=True),
         'ss': Strs('x', 'y'), 'sa': Strs()}

def cleaned_ok(name, v):
    if name == 'i': assert type(v) is int and 0 <= v <= 100
    if name == 'm': assert type(v) is int and v % 28 == 0
    if name == 'f': assert type(v) is float and math.isfinite(v) and v >= 0
    if name == 'b': assert type(v) is bool
    if name == 's': assert v in ('a', 'b')
    if name == 'c': assert (type(v) is int and v >= 0) or v in ('pre_merge', 'post_merge')
    if name in ('ii', 'ie'):
        assert type(v) is tuple and all(type(x) is int for x in v) and (name == 'ie' or len(v) >= 1)
    if name in ('ss', 'sa'): assert type(v) is tuple and len(v) >= 1 and all(type(x) is str for x in v)

@given(st.sampled_from(sorted(SPECS)), values)
def test_specs_clean_or_paramerror(name, v):
    try: out = SPECS[name].check(name, v)
    except ParamError as e:
        assert f'parameter {name}=' in str(e) and len(str(e)) < 600
        bad_input()
        return
    cleaned_ok(name, out)

@given(st.dictionaries(st.text(alphabet=string.ascii_letters + '_', min_size=1, max_size=8), values, max_size=4),
       st.dictionaries(st.sampled_from(sorted(SPECS)), values, min_size=0, max_size=len(SPECS)))
def test_check_params_whole_cell(extra, given_values):
    "Random parameter cells: unknown names, missing names, wrong values: ParamError, or every value cleaned."
    g = dict(given_values, **{k: v for k, v in extra.items() if k not in SPECS})
    try: out = check_params(g, set(), SPECS)
    except ParamError:
        bad_input()
        return
    assert set(out) == set(SPECS) and not (set(g) - set(SPECS) - {k for k in g if k.startswith('_')})
    for k, v in out.items(): cleaned_ok(k, v)

# ---------------------------------------------------------------------------------------------------
# Names and sizes

@given(st.text(max_size=40))
def test_safe_names_stay_inside(tmp_path_factory, name):
    root = tmp_path_factory.mktemp('r')
    try: n = safe_name(name)
    except ValueError:
        bad_input()
        return
    assert (root/n).resolve().parent == root.resolve() and not n.startswith('.')

@example('..')
@example('../x')
@example('a/../..')
@example('.')
@given(st.text(alphabet='ab./~_-', max_size=30))
def test_run_dirs_stay_inside_reports(tmp_path_factory, d):
    """A relative run_dir: strictly inside reports/ or a ValueError; nothing is created outside. This test's
    reports/ lies in the temp dir, so no exception for the temp dir may apply to relative paths (issue 18.3)."""
    assume(d != '')                                            # empty: a fresh folder, another rule
    root = tmp_path_factory.mktemp('rep')
    os.environ['FORESIGHT_REPORTS'] = str(root/'reports')
    try:
        try: out = resolve_run_dir('exp', d)
        except ValueError:
            bad_input()
            return
        assert (root/'reports').resolve() in out.resolve().parents, (d, out)
    finally:
        del os.environ['FORESIGHT_REPORTS']
        assert [p.name for p in root.iterdir()] in ([], ['reports']), list(root.iterdir())

@given(st.integers(1, 4000), st.integers(1, 4000),
       st.sampled_from([(784, 448 * 448), (56 * 56, 28 * 28 * 1280), (3136, 12845056)]))
def test_smart_size_is_a_fixed_point_of_the_processor(h, w, budget):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    lo, hi = budget
    try: hb, wb = smart_size(h, w, 28, lo, hi)
    except VideoError:
        assert max(h, w) / min(h, w) > 200
        bad_input()
        return
    assert hb % 28 == 0 and wb % 28 == 0 and hb >= 28 and wb >= 28
    assert smart_resize(hb, wb, factor=28, min_pixels=lo, max_pixels=hi) == (hb, wb)
    if 28 * 28 <= hi and max(h, w) / min(h, w) < 50: assert hb * wb <= hi
