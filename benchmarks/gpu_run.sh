#!/usr/bin/env bash
# Run benchmarks/gpu_checks.py on a GPU machine that has no network (a lent H200 with its stock Python image),
# from files carried along with the repository.
#
# 1. Prepare, in the repository root, on a machine with pip and a checkout of the official code at 7eb43a7:
#        bash benchmarks/gpu_run.sh prepare /path/to/Tipsomaly
#    This fills .gpu/ (git-ignored through .git/info/exclude, about 37 MB): the wheels zsad needs beyond that image
#    (transformers 5.24, pydantic), the official code's own pins that conflict with zsad's (transformers 5.0.0,
#    tokenizers 0.22, pillow 11.3.0, humanhash3), and the official checkout without its images, result logs and
#    its SigLIP2/JAX big_vision tree (not on the TIPS path; stubbed when absent).
# 2. On the GPU machine, with .gpu carried, in two commands of about 6 and 3 minutes:
#        bash benchmarks/gpu_run.sh run --skip official
#        bash benchmarks/gpu_run.sh run --skip parity attention model e2e
#    Extra arguments go to gpu_checks.py; both print their part of the table.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
  official=${2:?usage: gpu_run.sh prepare /path/to/official/Tipsomaly}
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
  rm -rf .gpu && mkdir -p .gpu/whl/zsad .gpu/whl/official .gpu/official
  opts=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
  python -m pip download -q "${opts[@]}" -d .gpu/whl/zsad transformers==5.24.0 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5
  python -m pip download -q "${opts[@]}" -d .gpu/whl/official transformers==5.0.0 tokenizers==0.22.2 \
    typer-slim==0.24.0 pillow==11.3.0
  python -m pip wheel -q --no-deps -w .gpu/whl/official humanhash3==0.0.6
  (cd "$official" && tar -cf - --exclude=./.git --exclude=./imgs --exclude=./workspaces --exclude='./model/big_vision/*' .) |
    tar -xf - -C .gpu/official
  test -f .gpu/official/test.py
  du -sh .gpu
  ;;
run)
  shift
  install=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
  "${install[@]}" --target /tmp/zsad-site .gpu/whl/zsad/*.whl
  "${install[@]}" --target /tmp/official-site .gpu/whl/official/*.whl
  printf '#!/bin/sh\nPYTHONPATH=/tmp/official-site exec python3 "$@"\n' >/tmp/official-python
  chmod +x /tmp/official-python
  export PYTHONPATH="/tmp/zsad-site:$PWD" PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python3 benchmarks/gpu_checks.py --official .gpu/official --official-python /tmp/official-python "$@"
  ;;
*)
  sed -n '2,16p' "$0"
  exit 2
  ;;
esac
