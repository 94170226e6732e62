#!/usr/bin/env bash
# REMIND on CORe50 (docs/core50.md): ImageNet-initialised ResNet-18, base init on the first 10% of
# the ordered stream, an evaluation after every further 10% of the training frames. Fine-tune
# baseline: REPLAY_SAMPLES=0. Every variable can be set in the environment; paths are relative to
# where you run the script unless absolute.
set -euo pipefail

CORE50_DIR=${CORE50_DIR:-./data/core50_128x128}       # the unpacked download: s1 .. s11
ORDERING=${ORDERING:-iid}                             # iid, class_iid, instance or class_instance
SEED=${SEED:-0}                                       # seeds the ordering and the run
WEIGHTS=${WEIGHTS:-imagenet}                          # imagenet, none or a ResNet-18 state_dict file
EXPT_NAME=${EXPT_NAME:-remind_core50_${ORDERING}_seed${SEED}}
SAVE_DIR=${SAVE_DIR:-./streaming_experiments/${EXPT_NAME}}
GPU=${GPU:-0}                                         # CUDA device index; DEVICE=cpu runs on the CPU
DEVICE=${DEVICE:-cuda}
NUM_WORKERS=${NUM_WORKERS:-8}
FRAME_STEP=${FRAME_STEP:-20}                          # 1 frame per second of the 20 fps videos
BASE_INIT_FRACTION=${BASE_INIT_FRACTION:-0.1}
EVAL_FRACTION=${EVAL_FRACTION:-0.1}
TRAIN_SESSIONS=${TRAIN_SESSIONS:-1,2,4,5,6,8,9,11}
TEST_SESSIONS=${TEST_SESSIONS:-3,7,10}
IMAGE_SIZE=${IMAGE_SIZE:-128}
BASE_INIT_EPOCHS=${BASE_INIT_EPOCHS:-10}              # F trained on the base-init codes
REPLAY_SAMPLES=${REPLAY_SAMPLES:-50}                  # 0: the fine-tune baseline
MAX_BUFFER_SIZE=${MAX_BUFFER_SIZE:-}                  # items; empty: unlimited
NUM_CODEBOOKS=${NUM_CODEBOOKS:-32}
CODEBOOK_SIZE=${CODEBOOK_SIZE:-256}
EXTRA_ARGS=${EXTRA_ARGS:-}                            # e.g. "--resume" to continue a stopped run

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-$(if [ -x "$HERE/../.venv/bin/python" ]; then echo "$HERE/../.venv/bin/python"; else echo python3; fi)}

extra_buffer=()
[ -n "$MAX_BUFFER_SIZE" ] && extra_buffer=(--max_buffer_size "$MAX_BUFFER_SIZE")

CUDA_VISIBLE_DEVICES=$GPU "$PYTHON" "$HERE/core50_experiment.py" \
  --images_dir "$CORE50_DIR" \
  --ordering "$ORDERING" \
  --seed "$SEED" \
  --weights "$WEIGHTS" \
  --expt_name "$EXPT_NAME" \
  --save_dir "$SAVE_DIR" \
  --device "$DEVICE" \
  --num_workers "$NUM_WORKERS" \
  --frame_step "$FRAME_STEP" \
  --base_init_fraction "$BASE_INIT_FRACTION" \
  --eval_fraction "$EVAL_FRACTION" \
  --train_sessions "$TRAIN_SESSIONS" \
  --test_sessions "$TEST_SESSIONS" \
  --image_size "$IMAGE_SIZE" \
  --base_init_epochs "$BASE_INIT_EPOCHS" \
  --extract_features_from model.layer4.0 \
  --classifier ResNet18_StartAt_Layer4_1 \
  --num_codebooks "$NUM_CODEBOOKS" \
  --codebook_size "$CODEBOOK_SIZE" \
  --rehearsal_samples "$REPLAY_SAMPLES" \
  --lr_mode step_lr_per_class \
  --start_lr 0.1 --end_lr 0.001 --lr_step_size 100 \
  --weight_decay 1e-5 \
  --random_resized_crops \
  --use_mixup --mixup_alpha 0.1 \
  "${extra_buffer[@]}" $EXTRA_ARGS
