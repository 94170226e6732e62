#!/usr/bin/env bash
# Base initialization of REMIND on ImageNet (paper defaults): label files, ResNet-18 trained from
# scratch on the first 100 classes of the class order, then G's features, the product quantizer
# and the base-init codes. Every variable below can be overridden from the environment, e.g.
#   DATA_DIR=/data/imagenet NPROC=4 bash image_classification_experiments/train_base_init_network.sh
# Relative paths are relative to the directory you run it from. DATA_DIR holds train/ and val/
# (val: one folder per class, or the flat Kaggle layout with VAL_LABELS_CSV=.../LOC_val_solution.csv).
# run_imagenet_experiment.sh, run from the same directory, finds what this writes with its own
# defaults: the checkpoint SAVE_DIR/best_<MODEL>_<BASE_MAX_CLASS>.pth and the base-init cache
# (base_init_features.h5, pq.npz, base_init_codes.h5) in SAVE_DIR, its BASE_INIT_DIR.
set -euo pipefail

DATA_DIR="${DATA_DIR:-data/imagenet}"
SAVE_DIR="${SAVE_DIR:-runs/base_init}"
LABELS_DIR="${LABELS_DIR:-imagenet_files}"
CLASS_ORDER="${CLASS_ORDER:-imagenet_files/imagenet_class_order.txt}"
VAL_LABELS_CSV="${VAL_LABELS_CSV:-}"
GPU="${GPU:-}"                 # CUDA devices, e.g. 0 or 0,1,2,3 (empty: all visible ones)
NPROC="${NPROC:-1}"            # processes (GPUs) per node; >1 runs DistributedDataParallel
BASE_MAX_CLASS="${BASE_MAX_CLASS:-100}"
NUM_CLASSES="${NUM_CLASSES:-1000}"
EPOCHS="${EPOCHS:-40}"
BATCH_SIZE="${BATCH_SIZE:-256}"  # global batch, split over the NPROC processes
IMAGE_SIZE="${IMAGE_SIZE:-224}"
WORKERS="${WORKERS:-8}"
MODEL="${MODEL:-ResNet18ClassifyAfterLayer4_1}"
SEED="${SEED:-0}"
EVAL_RESIZE_RATIO="${EVAL_RESIZE_RATIO:-}"  # val/extraction resize before the center crop (empty: 256/224;
                                           # 1.0 for images already at IMAGE_SIZE); give the stream the same
WITH_PQ="${WITH_PQ:-1}"        # 1: also extract features, fit the PQ and encode the base-init set
TRAIN_ARGS="${TRAIN_ARGS:-}"   # extra flags for the training script (e.g. --amp --resume DIR)
EXTRACT_ARGS="${EXTRACT_ARGS:-}"
PQ_ARGS="${PQ_ARGS:-}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ -n "$GPU" ]]; then export CUDA_VISIBLE_DEVICES="$GPU"; fi

CKPT_FILE="${MODEL}_${BASE_MAX_CLASS}.pth"
mkdir -p "$SAVE_DIR"
LOG="$SAVE_DIR/${MODEL}_${BASE_MAX_CLASS}_from_scratch.log"
VAL_CSV_ARG=()
if [[ -n "$VAL_LABELS_CSV" ]]; then VAL_CSV_ARG=(--val_labels_csv "$VAL_LABELS_CSV"); fi
RATIO_ARG=()
if [[ -n "$EVAL_RESIZE_RATIO" ]]; then RATIO_ARG=(--eval_resize_ratio "$EVAL_RESIZE_RATIO"); fi

if [[ ! -f "$LABELS_DIR/imagenet_train_labels.npy" || ! -f "$LABELS_DIR/imagenet_val_labels.npy" ]]; then
  "$PYTHON" "$SCRIPT_DIR/make_numpy_imagenet_label_files.py" --data "$DATA_DIR" \
    --labels_dir "$LABELS_DIR" --class_order_text_file "$CLASS_ORDER" "${VAL_CSV_ARG[@]}"
fi

if [[ "$NPROC" -gt 1 ]]; then
  LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
else
  LAUNCH=("$PYTHON")
fi

# shellcheck disable=SC2086  # *_ARGS are word-split on purpose
"${LAUNCH[@]}" "$SCRIPT_DIR/train_base_init_network_from_scratch.py" \
  --arch "$MODEL" --data "$DATA_DIR" --labels_dir "$LABELS_DIR" "${VAL_CSV_ARG[@]}" \
  --base_max_class "$BASE_MAX_CLASS" --num_classes "$NUM_CLASSES" --epochs "$EPOCHS" \
  --batch_size "$BATCH_SIZE" --image_size "$IMAGE_SIZE" --workers "$WORKERS" --seed "$SEED" \
  --save_dir "$SAVE_DIR" --ckpt_file "$CKPT_FILE" "${RATIO_ARG[@]}" $TRAIN_ARGS 2>&1 | tee -a "$LOG"

if [[ "$WITH_PQ" == 1 ]]; then
  # shellcheck disable=SC2086
  "$PYTHON" "$SCRIPT_DIR/extract_features.py" --images_dir "$DATA_DIR" --label_dir "$LABELS_DIR" \
    --classifier_ckpt "$SAVE_DIR/best_$CKPT_FILE" --base_init_classes "$BASE_MAX_CLASS" \
    --image_size "$IMAGE_SIZE" --workers "$WORKERS" --save_dir "$SAVE_DIR" "${RATIO_ARG[@]}" \
    $EXTRACT_ARGS 2>&1 | tee -a "$LOG"
  # shellcheck disable=SC2086
  "$PYTHON" "$SCRIPT_DIR/fit_pq.py" --save_dir "$SAVE_DIR" --seed "$SEED" $PQ_ARGS 2>&1 | tee -a "$LOG"
fi
