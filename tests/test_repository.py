"The repository stands on its own: no path outside it, and `pip install -e .` without extras runs every notebook."
import ast, re, sys, json, configparser
from importlib.metadata import packages_distributions, distribution, PackageNotFoundError
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {'flash_attn': 'the `gpu` extra; imported inside try/except, sdpa otherwise',
            'tensorboardX': "a fallback writer, tried only when tensorboard's own (a requirement) cannot be imported",
            'wandb': 'used only when the user installs it and sets WANDB_PROJECT'}


def code_of(path: Path) -> str:
    if path.suffix == '.ipynb':
        return '\n'.join(''.join(c['source']) for c in json.loads(path.read_text())['cells']
                         if c['cell_type'] == 'code')
    return path.read_text(errors='ignore')


def sources():
    pats = ['nbs/**/*.ipynb', 'foresight/*.py', 'tests/*.py', 'tools/*.py', 'scripts/*.py', 'benchmarks/*.py',
            'Makefile',
            '.ci/run']
    return [p for pat in pats for p in ROOT.glob(pat) ]


def test_nothing_reads_a_path_outside_the_repository():
    """A user's clone has no sibling folders (the development machine's shared folder above all): no source may point
    there."""
    sib = 'sh' + 'ared'     # spelled in two parts, so this file does not match itself
    outside = re.compile(r"\.\.[/\\]" + sib + r"""|['"]\.\.['"]\s*\)?\s*/\s*['"]""" + sib +
                         r"""|\.parent\s*/\s*['"]""" + sib + r"""|parents\[\d\]\s*/\s*['"]\.\.['"]""")
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources() for m in outside.finditer(code_of(p))]
    assert hits == []


def runtime_closure() -> set:
    "The runtime requirements of settings.ini and everything they pull in, as normalised distribution names."
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini')
    norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()
    todo = [re.split(r'[<>=!~;\[ ]', r)[0] for r in cfg['DEFAULT']['requirements'].split()]
    seen = set()
    while todo:
        n = norm(todo.pop())
        if n in seen: continue
        seen.add(n)
        try: reqs = distribution(n).requires or []
        except PackageNotFoundError: continue
        todo += [re.split(r'[<>=!~;\[ (]', r)[0] for r in reqs if 'extra ==' not in r]
    return seen


def imported_modules(code: str) -> set:
    mods = set()
    for line in code.splitlines():          # cells may hold magics or `#|` lines: read import statements one by one
        s = line.strip()
        if not s.startswith(('import ', 'from ')): continue
        try: tree = ast.parse(s.split(';')[0])
        except SyntaxError: continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import): mods |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods.add(node.module.split('.')[0])
    return mods


def test_notebooks_import_only_runtime_requirements():
    "What a notebook imports comes with `pip install -e .` (no `dev` extra): fastcore.test did not, once."
    closure, owners = runtime_closure(), packages_distributions()
    norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()
    missing = {}
    for nb in (ROOT/'nbs').glob('**/*.ipynb'):
        for m in imported_modules(code_of(nb)):
            if m in sys.stdlib_module_names or m in ('foresight', '__future__') or m in OPTIONAL: continue
            dists = {norm(d) for d in owners.get(m, [m])}
            if not dists & closure: missing.setdefault(m, []).append(nb.name)
    assert missing == {}, f"imported by notebooks but not a runtime requirement: {missing}"

def _import_graph() -> dict:
    "`{module: modules of foresight it imports}`, counting imports inside functions too."
    pkg = ROOT/'foresight'
    mods = {p.stem for p in pkg.glob('*.py')} - {'__init__', '_modidx'}
    g = {m: set() for m in mods}
    for m in mods:
        for n in ast.walk(ast.parse((pkg/f'{m}.py').read_text())):
            if isinstance(n, ast.ImportFrom):
                parts = (n.module or '').split('.')
                if n.level: names = [parts[0]] if n.module else [a.name for a in n.names]
                elif parts[0] == 'foresight': names = parts[1:2] or [a.name for a in n.names]
                else: continue
            elif isinstance(n, ast.Import):
                names = [a.name.split('.')[1] for a in n.names if a.name.startswith('foresight.')]
            else: continue
            g[m] |= {x for x in names if x in mods and x != m}
    return g

def _cycles(g: dict) -> set:
    "Every import cycle, as the sorted tuple of its modules."
    out = set()
    for a in g:
        stack = [(a, [a])]
        while stack:
            v, path = stack.pop()
            for w in g[v]:
                if w == a: out.add(tuple(sorted(path)))
                elif w not in path: stack.append((w, path + [w]))
    return out

# None is left: the C1 decision moved to foresight.decisions, which cli and ablations both import (issue 14).
KNOWN_CYCLES = set()

def test_no_new_import_cycle():
    "Modules import one way (extraction and fastvision share foresight.order instead of importing each other)."
    g = _import_graph()
    assert 'order' in g['fastvision'] and 'extraction' not in g['fastvision'] and 'order' in g['extraction']
    assert _cycles(g) - KNOWN_CYCLES == set(), _cycles(g)
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == {('a', 'b', 'c')}    # the finder finds a planted cycle

# Modules that name Qwen's constants or parse parameters import without torch: the CLI's `list`, `plan` and
# `report` answer in a fraction of a second, and `foresight.order` (the constants) may be imported anywhere.
TORCH_FREE = ('order', 'layers', 'params', 'runs', 'findings', 'data', 'cli', 'decisions')

def test_light_modules_import_without_torch():
    import subprocess
    code = ("import sys, importlib\n"
            f"for m in {TORCH_FREE!r}: importlib.import_module('foresight.' + m)\n"
            "print(sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.')))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == '[]', f"importing {TORCH_FREE} loaded torch: {out[:200]}"
