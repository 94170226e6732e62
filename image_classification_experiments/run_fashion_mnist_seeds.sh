#!/usr/bin/env bash
# The Fashion-MNIST demo over three seeds (three full pipelines: base network, PQ, REMIND and
# fine-tune streams; about three times the time of `make demo`), then the mean table.
# Any variable of run_fashion_mnist_demo.sh can be set as well, e.g. SEEDS="0 1 2 3 4".
set -euo pipefail
SEEDS="${SEEDS:-0 1 2}" exec bash "$(dirname "${BASH_SOURCE[0]}")/run_fashion_mnist_demo.sh"
