"""Developer helper: convert between nbdev notebooks and jupytext percent scripts.

    python tools/nb.py topy nbs/00_extraction.ipynb /tmp/00.py    # edit the script in any editor
    python tools/nb.py tonb /tmp/00.py nbs/00_extraction.ipynb    # back to the notebook (outputs dropped)

Cell tags (e.g. papermill's `parameters`) survive the round trip. Run `nbdev_clean` afterwards.
"""
import os, sys, jupytext, nbformat

def main(cmd, src, dst):
    if cmd == 'topy':
        jupytext.write(jupytext.read(src), dst, fmt='py:percent')
    elif cmd == 'tonb':
        nb = jupytext.read(src, fmt='py:percent')
        old = nbformat.read(dst, 4).metadata if os.path.exists(dst) else {}    # keep the form tools/lab_nbs.py gave it
        nb.metadata = {'kernelspec': {'display_name': 'foresight', 'language': 'python', 'name': 'foresight'},
                       **{k: old[k] for k in ('kernelspec', 'language_info') if k in old}}
        for c in nb.cells:
            c.metadata = {k: v for k, v in c.metadata.items() if k == 'tags'}
            if c.cell_type == 'code': c.outputs, c.execution_count = [], None
        nbformat.write(nb, dst)
    else: raise SystemExit(__doc__)

if __name__ == '__main__': main(*sys.argv[1:4])
