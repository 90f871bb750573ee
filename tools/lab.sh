#!/usr/bin/env bash
# JupyterLab on the repository root with the project's kernel (`make lab`; tools/test_lab.sh starts it the same way).
# Extra arguments go to `jupyter lab` (e.g. --no-browser --port 8899).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
"$VENV/bin/python" -m ipykernel install --sys-prefix --name foresight --display-name foresight >/dev/null
# This checkout's kernel and extensions first, before any per-user `foresight` kernel of another checkout.
export JUPYTER_PATH="$VENV/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
if [ "${MPLBACKEND:-}" = Agg ] || [ "${MPLBACKEND:-}" = agg ]; then
  echo "lab: MPLBACKEND=Agg (make's default for scripts) is not passed to the kernels, so figures show inline;" \
       "choose another backend in a notebook with %matplotlib" >&2
  unset MPLBACKEND
fi
args=(--ServerApp.root_dir="$PWD" --LabApp.default_url=/lab/tree/nbs)
[ "$(id -u)" = 0 ] && args+=(--allow-root)   # containers often run as root; jupyter refuses it otherwise
exec "$VENV/bin/jupyter" lab "${args[@]}" "$@"
