#!/usr/bin/env bash
# Data preparation for streaming VQA on CLEVR (the reference's offline steps 3-5):
# question tables + dictionary + LUT + embedding init, frozen-ResNet features, PQ codes for each
# stream order. DATA_ROOT holds questions/ and images/ of CLEVR v1.0. Outputs go to OUT_DIR
# (formats: vqa_experiments/DATA_FORMATS.md); disk: ~68 GB of float features (deletable after encoding), ~0.5 GB of codes.
# Every variable below can be overridden from the environment, e.g.
#   DATA_ROOT=/data/CLEVR GLOVE=/data/glove.6B.300d.txt bash vqa_experiments/run_clevr_preprocessing.sh
# Relative paths are relative to the directory you run it from.
set -euo pipefail

DATA_ROOT="${DATA_ROOT:-data/CLEVR_v1.0}"
OUT_DIR="${OUT_DIR:-${DATA_ROOT}}"        # the trainer's DATA_DIR
GLOVE="${GLOVE:-}"                         # glove.6B.300d.txt; empty: seeded random embedding init
WEIGHTS="${WEIGHTS:-imagenet}"             # imagenet (torchvision V1, downloaded) | none | state_dict path
ARCH="${ARCH:-}"                           # empty: the reference's backbone
LAYER="${LAYER:-}"
IMAGE_SIZE="${IMAGE_SIZE:-224}"
BATCH_SIZE="${BATCH_SIZE:-128}"
NUM_WORKERS="${NUM_WORKERS:-8}"
ORDERS="${ORDERS:-iid qtype}"
PQ_TRAIN_SET="${PQ_TRAIN_SET:-reference}"  # reference | base_init
DEVICE="${DEVICE:-}"                       # empty: cuda when available, else cpu
SEED="${SEED:-0}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$(if [ -x "${SCRIPT_DIR}/../.venv/bin/python" ]; then echo "${SCRIPT_DIR}/../.venv/bin/python"; else echo python3; fi)}"

glove_args=(); [ -n "${GLOVE}" ] && glove_args=(--glove "${GLOVE}")
arch_args=(); [ -n "${ARCH}" ] && arch_args+=(--arch "${ARCH}"); [ -n "${LAYER}" ] && arch_args+=(--layer "${LAYER}")
device_args=(); [ -n "${DEVICE}" ] && device_args=(--device "${DEVICE}")

"${PYTHON}" "${SCRIPT_DIR}/preprocess_clevr.py" --data_root "${DATA_ROOT}" --out_dir "${OUT_DIR}" \
    --embedding_seed "${SEED}" "${glove_args[@]}"
"${PYTHON}" "${SCRIPT_DIR}/extract_image_features.py" --dataset clevr --data_root "${DATA_ROOT}" \
    --out_dir "${OUT_DIR}" --image_size "${IMAGE_SIZE}" --weights "${WEIGHTS}" \
    --batch_size "${BATCH_SIZE}" --num_workers "${NUM_WORKERS}" --seed "${SEED}" \
    "${arch_args[@]}" "${device_args[@]}"
# shellcheck disable=SC2086  # ORDERS is a list
"${PYTHON}" "${SCRIPT_DIR}/fit_pq_and_encode.py" --dataset clevr --data_dir "${OUT_DIR}" \
    --order ${ORDERS} --pq_train_set "${PQ_TRAIN_SET}" --seed "${SEED}" "${device_args[@]}"
