#!/usr/bin/env bash
# landscaper 1.3.1's environment for --landscaper-python (bench/eval_throughput.py,
# bench/transformer_slice.py), for a machine without network.
#
#   bash bench/_peers/make_landscaper_env.sh                # with network: wheels into .whl-ls/
#   bash bench/_peers/make_landscaper_env.sh --install DIR  # offline: the environment at DIR
#
# Download: numpy<2 (landscaper's topology stack pins it) and landscaper 1.3.1 without
# its dependencies, as cp312 manylinux x86_64 wheels (about 18 MB). The timed function,
# landscaper/compute.py, needs only numpy, torch and tqdm; the package __init__ also
# imports topopy and nglpy (source distributions only: they would need compiling),
# gudhi, matplotlib, drawsvg and coloraide, so bench/_peers/landscaper_runner.py loads
# compute.py on its own and says so.
#
# Install: `python3 -m venv --system-site-packages DIR`, then the wheels from the folder
# with --no-index into DIR, so that DIR/bin/python finds numpy<2 (in DIR) before the
# system's numpy 2, and the system's torch and tqdm. With the system's pip where there
# is one, else the wheels are unpacked into DIR's site-packages.
#
# Environment: WHL_LS (the wheel folder; default <repo>/.whl-ls), PY_VERSION (the Python
# the download is for; default 3.12), PYTHON (the interpreter --install builds on;
# default python3), LS_NO_PIP=1 (--install unpacks the wheels even where pip exists).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WHL=${WHL_LS:-$ROOT/.whl-ls}
PKGS=("numpy<2" "landscaper==1.3.1")

download() {
    mkdir -p "$WHL"
    python3 -m pip download --no-deps --only-binary=:all: \
        --python-version "${PY_VERSION:-3.12}" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 -d "$WHL" "${PKGS[@]}"
    local exclude="$ROOT/.git/info/exclude"
    if [ -d "$ROOT/.git/info" ] && ! grep -qxF ".whl-ls/" "$exclude" 2>/dev/null; then
        echo ".whl-ls/" >>"$exclude"
    fi
    du -sh "$WHL"
}

install() {
    local dir=$1
    ls "$WHL"/*.whl >/dev/null  # fails with a message where the wheels did not travel
    "${PYTHON:-python3}" -m venv --system-site-packages --without-pip "$dir"
    local py="$dir/bin/python"
    # where PYTHON is itself a venv's, --system-site-packages reaches the base Python's
    # packages only: its own (torch, tqdm) come through a .pth, after DIR's (numpy<2)
    local parent_site venv_site
    parent_site=$("${PYTHON:-python3}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    venv_site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$parent_site" >"$venv_site/_lossatlas_parent_site.pth"
    if [ "${LS_NO_PIP:-0}" != 1 ] && "$py" -m pip --version >/dev/null 2>&1; then
        # the system's pip, run by the venv's python: installs into the venv
        "$py" -m pip install -q --no-index --find-links "$WHL" --no-deps --ignore-installed \
            --no-warn-script-location --disable-pip-version-check "${PKGS[@]}"
    else
        "$py" - "$WHL" <<'EOF'
import pathlib, sys, sysconfig, zipfile

site = pathlib.Path(sysconfig.get_paths()["purelib"])
for name in ("numpy-1", "landscaper-1.3.1"):
    (whl,) = pathlib.Path(sys.argv[1]).glob(name + "*.whl")
    zipfile.ZipFile(whl).extractall(site)
    print(f"unpacked {whl.name} into {site}")
EOF
    fi
    "$py" - <<'EOF'
import importlib.util

import numpy
import torch
import tqdm

assert int(numpy.__version__.split(".")[0]) < 2, numpy.__file__
spec = importlib.util.find_spec("landscaper")
assert spec is not None, "landscaper not installed"
print(f"landscaper env: numpy {numpy.__version__} ({numpy.__file__}); torch {torch.__version__} "
      f"({torch.__file__}); tqdm {tqdm.__version__}; landscaper at "
      f"{list(spec.submodule_search_locations)[0]}")
EOF
}

case "${1:-}" in
    "") download ;;
    --install) install "${2:?--install DIR}" ;;
    *) echo "usage: $0 [--install DIR]" >&2; exit 2 ;;
esac
