#!/usr/bin/env bash
# REMIND on ImageNet, as in the paper: base init on the first 100 classes (the checkpoint from
# train_base_init_network.sh), then 100 classes at a time, evaluating after each chunk.
# Edit the variables below; paths are relative to where you run the script unless absolute.
set -euo pipefail

IMAGENET_DIR=${IMAGENET_DIR:-./data/imagenet}           # holds train/ and val/
LABEL_DIR=${LABEL_DIR:-./imagenet_files}                # imagenet_{train,val}_labels.npy
BASE_INIT_CKPT=${BASE_INIT_CKPT:-./base_init/best_ResNet18ClassifyAfterLayer4_1.pth}
EXPT_NAME=${EXPT_NAME:-remind_imagenet}
SAVE_DIR=${SAVE_DIR:-./streaming_experiments/${EXPT_NAME}}
GPU=${GPU:-0}                                           # CUDA device index; DEVICE=cpu runs on the CPU
DEVICE=${DEVICE:-cuda}
VAL_LABELS_CSV=${VAL_LABELS_CSV:-}                      # LOC_val_solution.csv when val/ is flat
NUM_WORKERS=${NUM_WORKERS:-8}
REPLAY_SAMPLES=${REPLAY_SAMPLES:-50}
MAX_BUFFER_SIZE=${MAX_BUFFER_SIZE:-959665}              # = 10,000 raw 224x224x3 images in bytes
CODEBOOK_SIZE=${CODEBOOK_SIZE:-256}
NUM_CODEBOOKS=${NUM_CODEBOOKS:-32}
BASE_INIT_CLASSES=${BASE_INIT_CLASSES:-100}
CLASS_INCREMENT=${CLASS_INCREMENT:-100}
NUM_CLASSES=${NUM_CLASSES:-1000}
SEED=${SEED:-0}
EXTRA_ARGS=${EXTRA_ARGS:-}                              # e.g. "--resume" to continue a stopped run

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-$(if [ -x "$HERE/../.venv/bin/python" ]; then echo "$HERE/../.venv/bin/python"; else echo python3; fi)}

extra_val=()
[ -n "$VAL_LABELS_CSV" ] && extra_val=(--val_labels_csv "$VAL_LABELS_CSV")

CUDA_VISIBLE_DEVICES=$GPU "$PYTHON" "$HERE/imagenet_experiment.py" \
  --images_dir "$IMAGENET_DIR" \
  --label_dir "$LABEL_DIR" \
  --classifier_ckpt "$BASE_INIT_CKPT" \
  --expt_name "$EXPT_NAME" \
  --save_dir "$SAVE_DIR" \
  --device "$DEVICE" \
  --num_workers "$NUM_WORKERS" \
  --extract_features_from model.layer4.0 \
  --classifier ResNet18_StartAt_Layer4_1 \
  --spatial_feat_dim 7 \
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
