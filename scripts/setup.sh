#!/usr/bin/env bash
# Installs what is missing, then exits; safe to run again (it only adds what is absent).
#   bash scripts/setup.sh          a virtual environment .venv with the pinned packages and rsr itself
#   bash scripts/setup.sh --test   the same, plus test packages and the system OpenGL libraries (EGL and
#                                  Mesa) that MuJoCo's renderer needs for the renderer-oracle test
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -e .
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  egl_ok() {
    MUJOCO_GL=egl .venv/bin/python -c "import mujoco; c = mujoco.GLContext(8, 8); c.make_current(); c.free()" \
      >/dev/null 2>&1
  }
  if ! egl_ok; then
    pkgs="libegl1 libegl-mesa0 libgl1-mesa-dri"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: installing $pkgs (OpenGL for MuJoCo's renderer)"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
      sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
    else
      echo "setup: MuJoCo's EGL renderer is unavailable; install the Debian packages $pkgs" >&2
      exit 1
    fi
    egl_ok || { echo "setup: EGL still unavailable after installing $pkgs" >&2; exit 1; }
  fi
fi
echo "setup: ready (.venv)"
