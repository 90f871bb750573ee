"""Make notebooks read well in JupyterLab, and open there without becoming "modified". Idempotent.

    python tools/lab_nbs.py                         # every notebook in nbs/ (the lead runs it after merges)
    python tools/lab_nbs.py nbs/02_e1_2_probe.ipynb # some
    python tools/lab_nbs.py --check                 # exit 1 when a notebook would change (CI-friendly)

Every notebook gets the form JupyterLab writes back, so that opening and saving it changes nothing:
the project's kernel (`foresight`, which `make kernel` installs into .venv) as its kernelspec, the
`language_info` that kernel reports (JupyterLab writes it on opening and marks the notebook modified when it
differs; it holds the Python version, so run this script with the project's Python: .venv/bin/python), and
nbformat's JSON layout (what `nbdev_clean` writes too; settings.ini keeps `language_info`). Experiment notebooks (those
with a cell tagged
`parameters`) also get:
- no `matplotlib.use('Agg')`: figures show inline in JupyterLab (Agg is chosen by MPLBACKEND where no display exists);
- a "## Parameters" heading before the parameters cell, saying how to change a value and re-run;
- the checks collapsed: the code cells before the experiment that are neither exported library code nor the
  parameters and their check (imports, `#| default_exp`, examples and tests) are shown as one line
  (cell metadata `jupyter.source_hidden`, kept by nbdev_clean through settings.ini's allowed_cell_metadata_keys).
"""
import sys, re, json, hashlib
from pathlib import Path

# `make kernel`; nbdev_clean sets display_name to the name, so the kernel is installed that way too
KERNEL = 'foresight'
KERNELSPEC = dict(display_name=KERNEL, language='python', name=KERNEL)
try:
    from ipykernel.ipkernel import IPythonKernel
    LANGUAGE_INFO = dict(IPythonKernel.language_info)      # what the kernel reports, so what JupyterLab writes
except ImportError:
    LANGUAGE_INFO = dict(codemirror_mode=dict(name='ipython', version=3), file_extension='.py',
                         mimetype='text/x-python',
                         name='python', nbconvert_exporter='python', pygments_lexer='ipython3',
                         version='.'.join(map(str, sys.version_info[:3])))
HEADING = ("## Parameters\n\nEvery knob of the experiment, with defaults for the tiny preset. To try another value, "
           "edit it here and run this cell and the next one (the check), then the cells below: the cell that creates "
           "`Findings` starts a new run folder under `reports/`. `foresight run` passes the same names with `-p`.")
_AGG = re.compile(r"""matplotlib\.use\(\s*['"]agg['"]\s*\)""", re.I)

def src(c): return ''.join(c['source']) if isinstance(c['source'], list) else c['source']
def set_src(c, s): c['source'] = s.splitlines(keepends=True)
def directives(s): return {m[1] for m in re.finditer(r'^#\|\s*([\w-]+)', s, re.M)}

def drop_agg(s):
    "The cell source without `matplotlib.use('Agg')` (and an `import matplotlib` left with nothing to do)."
    out = []
    for line in s.split('\n'):
        if not _AGG.search(line):
            out.append(line)
            continue
        parts = [p for p in (q.strip() for q in line.split(';')) if p and not _AGG.fullmatch(p.split('#')[0].strip())]
        if 'import matplotlib' in parts and any(p.startswith('import matplotlib.') for p in parts):
            parts.remove('import matplotlib')
        if parts: out.append(re.match(r'\s*', line)[0] + '; '.join(parts))
    return '\n'.join(out)

def cell_id(path, what): return hashlib.sha1(f'{Path(path).name}:{what}'.encode()).hexdigest()[:8]

def labify(nb, path):
    "Apply the changes above to `nb` in place."
    nb['metadata']['kernelspec'] = dict(KERNELSPEC)
    nb['metadata']['language_info'] = json.loads(json.dumps(LANGUAGE_INFO))
    cells = nb['cells']
    ip = next((i for i, c in enumerate(cells) if 'parameters' in c.get('metadata', {}).get('tags', [])), None)
    if ip is None: return nb
    for c in cells:
        if c['cell_type'] == 'code' and _AGG.search(src(c)): set_src(c, drop_agg(src(c)))
    prev = cells[ip - 1] if ip else None
    if not (prev and prev['cell_type'] == 'markdown' and src(prev).startswith('## Parameters')):
        cells.insert(ip, dict(cell_type='markdown', id=cell_id(path, 'parameters-heading'), metadata={}, source=[]))
        ip += 1
    set_src(cells[ip - 1], HEADING)
    first_exp = next((i for i, c in enumerate(cells) if c['cell_type'] == 'code' and 'Findings(' in src(c)), len(cells))
    for i, c in enumerate(cells[:first_exp]):
        if c['cell_type'] != 'code' or i == ip: continue
        s = src(c)
        if directives(s) & {'export', 'exports', 'exporti'} or 'check_params(' in s: continue
        c['metadata'].setdefault('jupyter', {})['source_hidden'] = True
    return nb

def text(nb): return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n'   # nbformat's and nbdev's form

def main(args):
    check = '--check' in args
    paths = [Path(a) for a in args if a != '--check'] or sorted(Path('nbs').rglob('*.ipynb'))
    changed = []
    for p in paths:
        if '.ipynb_checkpoints' in p.parts: continue
        old = p.read_text(encoding='utf-8')
        new = text(labify(json.loads(old), p))
        if new != old:
            changed.append(str(p))
            if not check: p.write_text(new, encoding='utf-8')
    print(('would change: ' if check else 'changed: ') + (', '.join(changed) or 'nothing'))
    return 1 if check and changed else 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
