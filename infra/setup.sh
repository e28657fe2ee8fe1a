#!/usr/bin/env bash
# bash infra/setup.sh [PROJECT_DIR]
#
# Installs this project on a fresh GPU node or Ray container, into the Python that Ray runs with: torch from the
# PyTorch CUDA wheel index first, then the project (editable), keeping the node's Ray. PROJECT_DIR defaults to the
# checkout holding this script. Run by `ray up infra/cluster.yaml` (setup_commands) and by every KubeRay pod before
# `ray start` (infra/kuberay/*.yaml). Settings (environment):
#   TORCH_CUDA=cu128       PyTorch wheel index: cu126 | cu128 | cu130 | cpu. H100 needs a CUDA 12 build and a
#                          driver at least as new as that CUDA (nvidia-smi shows the driver's CUDA version).
#   TORCH_VERSION=2.13.0   the torch the test suite runs with (Makefile)
#   RAY_VERSION            only where Ray is not installed yet; otherwise the installed Ray is kept
#   PYTHON=python          the interpreter to install into
#   DRY_RUN=1              print the pip commands instead of running them
set -euo pipefail

project_dir="$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)"
python="${PYTHON:-python}"
torch_version="${TORCH_VERSION:-2.13.0}"
torch_cuda="${TORCH_CUDA:-cu128}"
ray_version="${RAY_VERSION:-$("$python" -c 'import ray; print(ray.__version__)' 2>/dev/null || true)}"
if [[ -z "$ray_version" ]]; then
  echo "setup.sh: $python has no Ray; set RAY_VERSION to the cluster's Ray version (e.g. 2.60.0) to install it" >&2
  exit 1
fi

run() {
  if [[ -n "${DRY_RUN:-}" ]]; then
    echo "$*"
  else
    "$@"
  fi
}

# torch first, from the CUDA index: installed as a dependency of the project, it would come from PyPI, built for
# whatever CUDA that release defaults to rather than the one this node's driver runs.
run "$python" -m pip install "torch==${torch_version}" --index-url "https://download.pytorch.org/whl/${torch_cuda}"
# The project's ray range (>=2.50,<3) would let pip upgrade Ray; a node whose Ray differs from the head's cannot join
# the cluster, so pin it to what is there. The installed torch satisfies the project's range and stays.
run "$python" -m pip install -e "${project_dir}[real]" "ray[train,data,serve]==${ray_version}"

if [[ -z "${DRY_RUN:-}" ]]; then
  "$python" - "$torch_version" "$torch_cuda" "$ray_version" <<'EOF'
import sys

import ray
import torch

import pipelines  # noqa: F401  (the project imports from any directory: the editable install worked)
import sp_core  # noqa: F401

torch_version, torch_cuda, ray_version = sys.argv[1:]
problems = []
if torch.__version__.split("+")[0] != torch_version:
    problems.append(f"torch {torch.__version__} installed, expected {torch_version}")
if torch_cuda != "cpu" and torch.version.cuda is None:
    problems.append(f"torch {torch.__version__} has no CUDA; expected a {torch_cuda} build")
if ray.__version__ != ray_version:
    problems.append(f"ray {ray.__version__} installed, expected {ray_version}")
if problems:
    sys.exit("setup.sh: " + "; ".join(problems))
print(f"setup.sh: torch {torch.__version__} (CUDA {torch.version.cuda}), ray {ray.__version__}, "
      f"GPUs visible: {torch.cuda.device_count()}")
EOF
fi
