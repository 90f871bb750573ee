#!/usr/bin/env bash
# `make test-lab`: JupyterLab in a real browser (tools/test_lab.py says what it checks). It installs, once, only:
# Debian's chromium (apt-get, as root; else it asks you to) and Playwright for Python into .cache/test-lab/venv,
# which drives that chromium (no browser download). Arguments go to tools/test_lab.py (--out, notebooks).
set -euo pipefail
cd "$(dirname "$0")/.."
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test-lab: installing Debian's chromium (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    CHROMIUM=$(command -v chromium)
  else
    echo "test-lab needs Debian's chromium: sudo apt-get install chromium (or set CHROMIUM=/path/to/chromium)" >&2; exit 1
  fi
fi
TV=.cache/test-lab/venv
if [ ! -e "$TV/.installed" ]; then
  echo "test-lab: Playwright for Python into $TV"
  python3 -m venv "$TV"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$TV/bin/python" -m pip install -q "playwright==1.65.2"
  touch "$TV/.installed"
fi
exec "$TV/bin/python" tools/test_lab.py --chromium "$CHROMIUM" --venv "${VENV:-.venv}" "$@"
