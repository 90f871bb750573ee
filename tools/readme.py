"""Render nbs/index.ipynb into README.md (nbdev_readme needs Quarto, which cannot be installed offline).

Markdown cells are copied as they are; code cells become fenced code blocks; cells tagged
`hide` or starting with `#| hide` are left out. `--check` exits 1 when README.md is stale.
"""
import sys, json
from pathlib import Path

def render(nb_path='nbs/index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip('\n')
        if c['cell_type'] == 'code':
            if src.startswith('#| hide') or 'hide' in c.get('metadata', {}).get('tags', []): continue
            lines = [l for l in src.splitlines() if not l.startswith('#|')]
            out.append('```python\n' + '\n'.join(lines) + '\n```')
        elif c['cell_type'] == 'markdown': out.append(src)
    head = '<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n\n'
    return head + '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    root = Path(__file__).resolve().parents[1]
    text = render(root/'nbs'/'index.ipynb')
    if '--check' in sys.argv:
        if (root/'README.md').read_text() != text:
            sys.exit('README.md is stale: run `python tools/readme.py` (it renders nbs/index.ipynb)')
    else: (root/'README.md').write_text(text)
