#!/usr/bin/env bash
# REMIND on ImageNet, as in the paper: base init on the first 100 classes (the checkpoint from
# train_base_init_network.sh), then 100 classes at a time, evaluating after each chunk.
# Edit the variables below (or set them in the environment); paths are relative to where you run
# the script unless absolute. Run from the directory train_base_init_network.sh ran from, its
# outputs are found with the defaults: the checkpoint BASE_INIT_DIR/best_<MODEL>_<BASE_INIT_CLASSES>.pth
# and the base-init cache (pq.npz, base_init_codes.h5) in BASE_INIT_DIR (its SAVE_DIR).
set -euo pipefail

IMAGENET_DIR=${IMAGENET_DIR:-${DATA_DIR:-data/imagenet}}  # holds train/ and val/ (DATA_DIR as in the base init)
LABEL_DIR=${LABEL_DIR:-${LABELS_DIR:-imagenet_files}}   # imagenet_{train,val}_labels.npy
BASE_INIT_CLASSES=${BASE_INIT_CLASSES:-100}
MODEL=${MODEL:-ResNet18ClassifyAfterLayer4_1}
BASE_INIT_DIR=${BASE_INIT_DIR:-runs/base_init}          # train_base_init_network.sh's SAVE_DIR
BASE_INIT_CKPT=${BASE_INIT_CKPT:-$BASE_INIT_DIR/best_${MODEL}_${BASE_INIT_CLASSES}.pth}
EXPT_NAME=${EXPT_NAME:-remind_imagenet}
SAVE_DIR=${SAVE_DIR:-./streaming_experiments/${EXPT_NAME}}
GPU=${GPU:-0}                                           # CUDA device index; DEVICE=cpu runs on the CPU
DEVICE=${DEVICE:-cuda}
VAL_LABELS_CSV=${VAL_LABELS_CSV:-}                      # LOC_val_solution.csv when val/ is flat
NUM_WORKERS=${NUM_WORKERS:-8}
IMAGE_SIZE=${IMAGE_SIZE:-224}                           # G's maps: IMAGE_SIZE/32 (7 x 7 at 224)
EVAL_RESIZE_RATIO=${EVAL_RESIZE_RATIO:-}                # as given to train_base_init_network.sh (empty: 256/224)
REPLAY_SAMPLES=${REPLAY_SAMPLES:-50}
MAX_BUFFER_SIZE=${MAX_BUFFER_SIZE:-959665}              # = 10,000 raw 224x224x3 images in bytes
CODEBOOK_SIZE=${CODEBOOK_SIZE:-256}
NUM_CODEBOOKS=${NUM_CODEBOOKS:-32}
CLASS_INCREMENT=${CLASS_INCREMENT:-100}
NUM_CLASSES=${NUM_CLASSES:-1000}
SEED=${SEED:-0}
EXTRA_ARGS=${EXTRA_ARGS:-}                              # e.g. "--resume" to continue a stopped run

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-$(if [ -x "$HERE/../.venv/bin/python" ]; then echo "$HERE/../.venv/bin/python"; else echo python3; fi)}

extra_val=()
[ -n "$VAL_LABELS_CSV" ] && extra_val=(--val_labels_csv "$VAL_LABELS_CSV")
[ -n "$EVAL_RESIZE_RATIO" ] && extra_val+=(--eval_resize_ratio "$EVAL_RESIZE_RATIO")

# shellcheck disable=SC2086  # EXTRA_ARGS is word-split on purpose
CUDA_VISIBLE_DEVICES=$GPU "$PYTHON" "$HERE/imagenet_experiment.py" \
  --images_dir "$IMAGENET_DIR" \
  --label_dir "$LABEL_DIR" \
  --classifier_ckpt "$BASE_INIT_CKPT" \
  --base_init_dir "$BASE_INIT_DIR" \
  --expt_name "$EXPT_NAME" \
  --save_dir "$SAVE_DIR" \
  --device "$DEVICE" \
  --num_workers "$NUM_WORKERS" \
  --image_size "$IMAGE_SIZE" \
  --extract_features_from model.layer4.0 \
  --classifier ResNet18_StartAt_Layer4_1 \
  --num_codebooks "$NUM_CODEBOOKS" \
  --codebook_size "$CODEBOOK_SIZE" \
  --rehearsal_samples "$REPLAY_SAMPLES" \
  --max_buffer_size "$MAX_BUFFER_SIZE" \
  --lr_mode step_lr_per_class \
  --start_lr 0.1 --end_lr 0.001 --lr_step_size 100 \
  --weight_decay 1e-5 \
  --random_resized_crops \
  --use_mixup --mixup_alpha 0.1 \
  --num_classes "$NUM_CLASSES" \
  --base_init_classes "$BASE_INIT_CLASSES" \
  --streaming_min_class "$BASE_INIT_CLASSES" \
  --streaming_max_class "$NUM_CLASSES" \
  --class_increment "$CLASS_INCREMENT" \
  --seed "$SEED" \
  "${extra_val[@]}" $EXTRA_ARGS
