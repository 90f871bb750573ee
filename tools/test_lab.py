"""The real-browser test of the JupyterLab workbench: `make test-lab` (tools/test_lab.sh installs what it needs).

JupyterLab starts as `make lab` starts it (tools/lab.sh) on a free local port; headless Chromium (Debian's, driven
by Playwright) opens each notebook, which must come up with the `foresight` kernel and unmodified, and saving it
must leave the file as it was. Then Run All, and the checks: no error output, at least one inline image and one HTML
table. Then a parameter is changed in the parameters cell, that cell and its check are run again, and the cells
below: no error, and a new run folder with the new value. A planted notebook (an error, an image, a table) first
proves that the checks can fail. Screenshots and the server's log go to the output folder (default
reports/test-lab/); runs go to its reports/ (FORESIGHT_REPORTS); autosave is off, so the notebooks are not written.
"""
import argparse, json, os, re, secrets, socket, subprocess, time, urllib.request
from pathlib import Path
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ['nbs/02_e1_2_probe.ipynb', 'nbs/07_q1_alignment.ipynb']
ERR, STDERR = 'application/vnd.jupyter.error', 'application/vnd.jupyter.stderr'

def log(*a): print(f'[test-lab {time.strftime("%H:%M:%S")}]', *a, flush=True)

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def lab_settings(d: Path):
    "User settings for the test's JupyterLab: no autosave (notebooks run in place), every cell rendered, no news."
    for plugin, value in {'docmanager-extension/plugin': dict(autosave=False),
                          'notebook-extension/tracker': dict(windowingMode='none'),
                          'apputils-extension/notification': dict(fetchNews='false', checkForUpdates=False)}.items():
        p = d/'@jupyterlab'/(plugin + '.jupyterlab-settings')
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(value))

class Lab:
    "JupyterLab started by tools/lab.sh, as `make lab` starts it, on a free port with a random token."
    def __init__(self, out: Path, venv: str):
        self.port, self.token = free_port(), secrets.token_hex(16)
        lab_settings(out/'lab-settings')
        env = dict(os.environ, VENV=venv, FORESIGHT_REPORTS=str(out/'reports'))
        self.logf = open(out/'jupyter.log', 'w')
        self.proc = subprocess.Popen([str(ROOT/'tools/lab.sh'), '--no-browser', f'--port={self.port}',
                                      '--ServerApp.ip=127.0.0.1',
                                      f'--IdentityProvider.token={self.token}',
                                      f'--LabApp.user_settings_dir={out/"lab-settings"}',
                                      f'--LabApp.workspaces_dir={out/"workspaces"}'], cwd=ROOT, env=env,
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        self.base = f'http://127.0.0.1:{self.port}'
        for _ in range(240):
            if self.proc.poll() is not None:
                raise SystemExit(f'JupyterLab exited ({self.proc.returncode}): see {out/"jupyter.log"}')
            try:
                self.api('status')
                return
            except OSError: time.sleep(0.5)
        raise SystemExit('JupyterLab did not answer within 2 minutes')

    def api(self, path):
        with urllib.request.urlopen(f'{self.base}/api/{path}?token={self.token}', timeout=10) as r: return json.load(r)

    def kernel(self, nb):
        "The kernel (name, execution_state) of the session open on `nb`."
        s = [s for s in self.api('sessions') if s['path'] == nb]
        return (s[0]['kernel']['name'], s[0]['kernel']['execution_state']) if s else (None, None)

    def wait_idle(self, nb, timeout, page=None, settle=3):
        """Until `nb`'s kernel has stayed idle for `settle` seconds and no cell waits (`[*]`) on `page`: the kernel
        goes idle between some queued cells, so its state alone does not say that Run All is over."""
        t0, quiet = time.time(), 0
        while time.time() - t0 < timeout:
            idle = self.kernel(nb)[1] == 'idle' and not (page and page.evaluate(QUEUED))
            quiet = quiet + 1 if idle else 0
            if quiet >= settle: return time.time() - t0
            time.sleep(1)
        raise AssertionError(f'{nb}: still busy after {timeout} s')

    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill()
        self.logf.close()

QUEUED = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt'))
                     .some(e => e.innerText.includes('[*]'))"""

def outputs(page):
    "What the notebook's outputs hold: error and stderr texts, inline images, HTML tables, widgets."
    return page.evaluate(f"""() => {{
        const q = s => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) ' + s));
        const err = q('[data-mime-type="{STDERR}"]').map(e => e.innerText);
        const tb = t => t.includes('Traceback (most recent call last)');     // JupyterLab renders errors as stderr
        return {{errors: q('[data-mime-type="{ERR}"]').map(e => e.innerText).concat(err.filter(tb))
                         .map(t => t.slice(-400)),
                stderr: err.filter(t => !tb(t)).map(t => t.slice(0, 300)),
                images: q('.jp-OutputArea-output img').length, tables: q('.jp-OutputArea-output table').length,
                widgets: q('.jp-OutputArea-output .jupyter-widgets [class*="progress"]').length}}; }}""")

def command(page, cmd):
    "Run a JupyterLab command from the menu bar (the menu that holds it)."
    for menu in ['Run', 'File', 'Edit', 'Kernel']:
        page.locator('.lm-MenuBar-item', has_text=re.compile(f'^{menu}$')).first.click()
        item = page.locator(f'.lm-Menu-item[data-command="{cmd}"]')
        if item.count():
            item.first.click()
            return
        page.keyboard.press('Escape')
    raise AssertionError(f'no menu item runs {cmd}')

def shot(page, locator, path):
    if locator is not None and locator.count():
        locator.first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    log('screenshot', path)

def open_nb(browser, lab, nb, out):
    "A fresh page on `nb`: the `foresight` kernel idle, the notebook unmodified; saving it leaves the file as it was."
    page = browser.new_page(viewport=dict(width=1500, height=1000))
    before = (ROOT/nb).read_bytes()
    page.goto(f'{lab.base}/lab/tree/{nb}?reset&token={lab.token}')
    page.wait_for_selector('.jp-NotebookPanel .jp-Cell', timeout=120_000)
    for _ in range(120):
        if lab.kernel(nb)[1] == 'idle': break
        time.sleep(1)
    page.wait_for_timeout(3000)         # metadata from the kernel's info reply arrives after it starts
    name = lab.kernel(nb)[0]
    assert name == 'foresight', f'{nb} opened with kernel {name!r}, not the project kernel foresight'
    dialog = page.locator('.jp-Dialog')
    assert not dialog.count(), f'{nb}: a dialog opened: {dialog.first.inner_text()}'
    dirty = 'jp-mod-dirty' in (page.locator('.lm-DockPanel .lm-TabBar-tab.jp-mod-current').first.get_attribute('class')
                               or '')
    page.locator('.jp-NotebookPanel .jp-Cell').first.click()
    page.keyboard.press('Escape')
    page.keyboard.press('Control+s')
    mtime = (ROOT/nb).stat().st_mtime
    for _ in range(50):
        page.wait_for_timeout(200)
        tab = page.locator('.lm-DockPanel .lm-TabBar-tab.jp-mod-current').first
        if 'jp-mod-dirty' not in (tab.get_attribute('class') or ''):
            break
    page.wait_for_timeout(1000)
    saved = (ROOT/nb).read_bytes()
    if saved != before:
        (out/(Path(nb).stem + '.saved.ipynb')).write_bytes(saved)
        (ROOT/nb).write_bytes(before)
    return page, dirty, saved == before, (ROOT/nb).stat().st_mtime != mtime

def run_all(page, lab, nb, timeout):
    command(page, 'runmenu:run-all')
    page.wait_for_timeout(2000)
    return lab.wait_idle(nb, timeout, page)

def planted(browser, lab, out):
    "A notebook with a known error, image and table: the checks below must see them, or they prove nothing."
    rel = out.relative_to(ROOT)/'planted.ipynb'
    cells = ["from foresight.findings import Findings\nimport matplotlib.pyplot as plt, tempfile\n"
             "f = Findings('planted', 'Planted', 'Seen?', {}, run_dir=tempfile.mkdtemp())\n"
             "fig, ax = plt.subplots(); ax.plot([0, 1]); f.figure(fig, 'line', 'A line.')\nf.table([dict(a=1)], 'tab', "
             "'A table.')",
             # a widget with ipywidgets, else a TqdmWarning
             "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): pass",
             "import sys; print('planted warning', file=sys.stderr)", "1 / 0"]
    nb = dict(cells=[dict(cell_type='code', execution_count=None, id=f'c{i}', metadata={}, outputs=[], source=s)
                     for i, s in enumerate(cells)],
              metadata=dict(kernelspec=dict(display_name='foresight', language='python', name='foresight')), nbformat=4,
              nbformat_minor=5)
    (ROOT/rel).write_text(json.dumps(nb))
    page, *_ = open_nb(browser, lab, str(rel), out)
    run_all(page, lab, str(rel), 120)
    o = outputs(page)
    shot(page, None, out/'planted.png')
    assert len(o['errors']) == 1 and 'ZeroDivisionError' in o['errors'][0], o
    assert [s for s in o['stderr'] if 'planted warning' not in s] == [] and len(o['stderr']) == 1, o
    assert o['images'] >= 1 and o['tables'] >= 1 and o['widgets'] >= 1, o
    page.close()
    log('planted notebook: the checks see its error, stderr, image, table and progress widget')

def results(out):
    return set((out/'reports').rglob('results.json'))

def check_notebook(browser, lab, nb, out, timeout):
    stem, rep = Path(nb).stem, {}
    page, dirty, same, _ = open_nb(browser, lab, nb, out)
    rep.update(opened_modified=dirty, save_is_noop=same)
    assert not dirty, f'{nb} shows as modified as soon as it opens'
    assert same, f'{nb}: saving it from JupyterLab changed the file (see {out/(stem + ".saved.ipynb")})'
    shot(page, None, out/f'{stem}_opened.png')
    runs0 = results(out)
    rep['run_all_s'] = round(run_all(page, lab, nb, timeout), 1)
    o = outputs(page)
    rep.update(images=o['images'], tables=o['tables'], widgets=o['widgets'], stderr=o['stderr'])
    log(nb, json.dumps(rep))
    shot(page, page.locator('.jp-OutputArea-output img'), out/f'{stem}_figure.png')
    shot(page, page.locator('.jp-OutputArea-output table'), out/f'{stem}_table.png')
    assert not o['errors'], f'{nb}: error output after Run All: {o["errors"]}'
    assert o['images'] >= 1 and o['tables'] >= 1, f'{nb}: {o["images"]} inline images, {o["tables"]} HTML tables'
    assert not o['stderr'], f'{nb}: warnings on stderr: {o["stderr"]}'
    runs1 = results(out)
    assert len(runs1 - runs0) == 1, f'{nb}: Run All wrote {len(runs1 - runs0)} results.json'
    # A changed value: the parameters cell, its check, then the cells below (a new run folder)
    cell = page.locator('.jp-CodeCell', has=page.locator('.cm-content', has_text='run_dir = ""')).first
    cell.locator('.cm-content').click()
    page.keyboard.press('Control+End')
    page.keyboard.press('Enter')
    page.keyboard.type('seed = 1')
    page.keyboard.press('Shift+Enter')
    page.wait_for_timeout(500)
    page.keyboard.press('Shift+Enter')
    lab.wait_idle(nb, 120, page)
    o = outputs(page)
    shot(page, cell, out/f'{stem}_rerun_parameters.png')
    assert not o['errors'], f'{nb}: re-running the parameters and their check failed: {o["errors"]}'
    t0 = time.time()
    command(page, 'notebook:run-all-below')
    page.wait_for_timeout(2000)
    lab.wait_idle(nb, timeout, page)
    rep['rerun_below_s'] = round(time.time() - t0, 1)
    o = outputs(page)
    assert not o['errors'], f'{nb}: the cells below failed after the parameter change: {o["errors"]}'
    new = results(out) - runs1
    assert len(new) == 1, f'{nb}: the re-run wrote {len(new)} new results.json'
    res = json.loads(next(iter(new)).read_text())
    first = json.loads(next(iter(runs1 - runs0)).read_text())['run']
    assert res['params']['seed'] == 1 and res['run'] != first, res['params']
    rep['rerun_folder'] = str(next(iter(new)).parent.relative_to(out))
    shot(page, page.locator('.jp-OutputArea-output img').last, out/f'{stem}_rerun_figure.png')
    page.close()
    return rep

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--chromium', default='/usr/bin/chromium')
    ap.add_argument('--venv', default='.venv', help="the project's environment (JupyterLab and the kernel)")
    ap.add_argument('--out', default='reports/test-lab', help='screenshots, the server log, the runs')
    ap.add_argument('--timeout', type=int, default=600, help='seconds allowed for Run All of one notebook')
    ap.add_argument('notebooks', nargs='*', default=NOTEBOOKS)
    a = ap.parse_args()
    out = (ROOT/a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for p in [*out.glob('*.png'), *out.glob('*.saved.ipynb')]: p.unlink()
    t0, before = time.time(), {nb: (ROOT/nb).read_bytes() for nb in a.notebooks}
    lab = Lab(out, a.venv)
    log(f'JupyterLab on port {lab.port} after {time.time() - t0:.0f} s')
    report = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=a.chromium, headless=True, args=['--no-sandbox'])
            planted(browser, lab, out)
            for nb in a.notebooks: report[nb] = check_notebook(browser, lab, nb, out, a.timeout)
            browser.close()
    finally:
        lab.stop()
        for p in ['planted.ipynb', 'planted.saved.ipynb']: (out/p).unlink(missing_ok=True)
    changed = [nb for nb in a.notebooks if (ROOT/nb).read_bytes() != before[nb]]
    assert not changed, f'the test changed {changed}'
    report['total_s'] = round(time.time() - t0, 1)
    (out/'report.json').write_text(json.dumps(report, indent=1))
    log('PASSED', json.dumps(report, indent=1))

if __name__ == '__main__': main()
