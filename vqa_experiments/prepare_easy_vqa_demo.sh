#!/usr/bin/env bash
# Data preparation for the offline easy-VQA demo (called by run_easy_vqa_demo.sh):
#   bash vqa_experiments/prepare_easy_vqa_demo.sh OUT_DIR
# writes OUT_DIR/TDIUC/: easy-VQA converted to the TDIUC layout, then the question tables,
# dictionary, LUT and embedding init, a briefly trained ResNet-18 (no pretrained weights exist
# offline; see README_data.md), its frozen features and the PQ codes for both stream orders.
# The prepared data dir for the trainer is OUT_DIR/TDIUC (dataset name "tdiuc").
# Every variable below can be overridden from the environment. Takes about 2 minutes on 2 cores.
set -euo pipefail

OUT_DIR="${1:?usage: prepare_easy_vqa_demo.sh OUT_DIR}"
MAX_TRAIN_IMAGES="${MAX_TRAIN_IMAGES:-0}"   # 0 = all 4,000 easy-VQA train images
MAX_VAL_IMAGES="${MAX_VAL_IMAGES:-0}"       # 0 = all 1,000 easy-VQA test images
ARCH="${ARCH:-resnet18}"
LAYER="${LAYER:-layer3}"                    # at 64 px: 4x4x256 feature maps
IMAGE_SIZE="${IMAGE_SIZE:-64}"
BACKBONE_STEPS="${BACKBONE_STEPS:-200}"     # Adam steps of batch 32; 0 = random frozen CNN
NUM_THREADS="${NUM_THREADS:-1}"             # torch/faiss CPU threads (1 is robust on a busy 2-core box; 0 = defaults)
NUM_CODEBOOKS="${NUM_CODEBOOKS:-32}"
NBITS="${NBITS:-8}"
DEVICE="${DEVICE:-cpu}"
SEED="${SEED:-0}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$(if [ -x "${SCRIPT_DIR}/../.venv/bin/python" ]; then echo "${SCRIPT_DIR}/../.venv/bin/python"; else echo python3; fi)}"
DATA_DIR="${OUT_DIR}/TDIUC"
BACKBONE="${OUT_DIR}/easy_vqa_${ARCH}.pt"
START=${SECONDS}

"${PYTHON}" "${SCRIPT_DIR}/make_easy_vqa_tdiuc.py" --out_dir "${DATA_DIR}" \
    --max_train_images "${MAX_TRAIN_IMAGES}" --max_val_images "${MAX_VAL_IMAGES}"
"${PYTHON}" "${SCRIPT_DIR}/preprocess_tdiuc.py" --data_root "${DATA_DIR}" \
    --embedding_seed "${SEED}"
if [ "${BACKBONE_STEPS}" -gt 0 ]; then
    "${PYTHON}" "${SCRIPT_DIR}/train_easy_vqa_backbone.py" --data_root "${DATA_DIR}" \
        --output "${BACKBONE}" --arch "${ARCH}" --layer "${LAYER}" --image_size "${IMAGE_SIZE}" \
        --steps "${BACKBONE_STEPS}" --device "${DEVICE}" --seed "${SEED}" \
        --num_threads "${NUM_THREADS}"
    WEIGHTS="${BACKBONE}"
else
    WEIGHTS=none
fi
"${PYTHON}" "${SCRIPT_DIR}/extract_image_features.py" --dataset tdiuc --data_root "${DATA_DIR}" \
    --arch "${ARCH}" --layer "${LAYER}" --image_size "${IMAGE_SIZE}" --weights "${WEIGHTS}" \
    --num_workers 0 --device "${DEVICE}" --seed "${SEED}" --num_threads "${NUM_THREADS}" --no_progress
"${PYTHON}" "${SCRIPT_DIR}/fit_pq_and_encode.py" --dataset tdiuc --data_dir "${DATA_DIR}" \
    --order iid qtype --num_codebooks "${NUM_CODEBOOKS}" --nbits "${NBITS}" \
    --device "${DEVICE}" --seed "${SEED}" --num_threads "${NUM_THREADS}" --no_progress
echo "easy-VQA demo data ready in ${DATA_DIR} ($((SECONDS - START)) s)"
