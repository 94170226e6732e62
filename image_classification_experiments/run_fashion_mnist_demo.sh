#!/usr/bin/env bash
# REMIND end to end on Fashion-MNIST (64x64 RGB), on a CPU, through the ImageNet scripts:
#   1. data: Fashion-MNIST idx files (Debian package dataset-fashion-mnist, installed here when
#      running as root; else torchvision's download when online) -> ImageFolder tree + labels;
#   2. base initialization: ResNet-18 from scratch on classes 0-4 (10-way fc);
#   3. G's features of the base-init images -> product quantizer (32 codebooks x 256) -> codes;
#   4. REMIND streams classes 5-9 one image at a time, evaluating after every class (paper defaults:
#      50 replayed samples, mixup alpha 0.1, latent random resized crops, per-class lr);
#   5. the fine-tune baseline (same base network, no replay, no mixup, no crops);
#   5b. the offline upper bound (F trained on the codes of everything seen so far, at each point);
#   6. the table REMIND vs fine-tune (seen-class top-1 after each class) and the plots, then the
#      Omega_all of REMIND and fine-tune against the offline bound.
# Every variable below can be overridden from the environment, e.g.
#   SEEDS="0 1 2" bash image_classification_experiments/run_fashion_mnist_demo.sh
# Relative paths are relative to the repository root (the script runs from there, wherever it is
# called from). Re-running continues where a run stopped and skips finished steps; delete OUT_DIR
# to start afresh (needed after changing a setting of a finished run).
set -euo pipefail

SEEDS="${SEEDS:-0}"                        # one full pipeline per seed; "0 1 2" for the 3-seed table
OUT_DIR="${OUT_DIR:-demo_output/fashion_mnist}"
DATA_DIR="${DATA_DIR:-data/fashion_mnist_64}"  # the converted ImageFolder tree (and labels/)
FMNIST_IDX_DIR="${FMNIST_IDX_DIR:-}"       # folder of the 4 idx .gz files (empty: search / install)
IMAGE_SIZE="${IMAGE_SIZE:-64}"
EVAL_RESIZE_RATIO="${EVAL_RESIZE_RATIO:-1}"  # val/extraction: resize to IMAGE_SIZE x this, center-crop
                                           # IMAGE_SIZE. The images are stored at 64 px, so 1 keeps them
                                           # whole; 256/224 (the ImageNet recipe) would cut their border
BASE_CLASSES="${BASE_CLASSES:-5}"          # base init on classes [0, 5), stream [5, 10)
NUM_CLASSES=10
BASE_PER_CLASS="${BASE_PER_CLASS:-1000}"   # training images per base class
STREAM_PER_CLASS="${STREAM_PER_CLASS:-300}"  # images streamed per new class
VAL_PER_CLASS="${VAL_PER_CLASS:-500}"      # test images per class used for evaluation
BASE_EPOCHS="${BASE_EPOCHS:-12}"
BASE_BATCH="${BASE_BATCH:-64}"
BASE_LR="${BASE_LR:-0.05}"
BASE_LR_STEP="${BASE_LR_STEP:-9}"          # epochs between lr x0.1
NUM_CODEBOOKS="${NUM_CODEBOOKS:-32}"
CODEBOOK_SIZE="${CODEBOOK_SIZE:-256}"
REPLAY="${REPLAY:-50}"                     # replayed samples per streaming step
MIXUP_ALPHA="${MIXUP_ALPHA:-0.1}"
OFFLINE_EPOCHS="${OFFLINE_EPOCHS:-1}"        # offline bound: epochs of F on the seen codes at each point
BUFFER_SIZE="${BUFFER_SIZE:-$((NUM_CLASSES * STREAM_PER_CLASS))}"  # replay buffer cap (items)
LR_STEP="${LR_STEP:-100}"                  # per-class lr: 0.1 -> 0.001 over STREAM_PER_CLASS samples,
                                           # multiplied by a constant every LR_STEP samples (paper: 100)
WORKERS="${WORKERS:-1}"                    # data-loading processes (1: loading overlaps the training)
CHANNELS_LAST="${CHANNELS_LAST:-1}"        # 1: base init and G's features in channels-last memory order
                                           # (1.3x faster on the CPU; the 2 x 2 stream itself is faster
                                           # without it, so it does not get it)
AMP="${AMP:-0}"                            # 1: base init in mixed precision (bfloat16 on the CPU: about
                                           # 2x faster with AVX512-BF16 or AMX, slower without)
KEEP_MODELS="${KEEP_MODELS:-0}"            # 1: keep each run's per-class remind_model/ files (about
                                           # 440 MB per run); 0: delete them once the run has finished
DEVICE="${DEVICE:-}"                       # empty: cuda if available, else cpu
PYTHON="${PYTHON:-}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
cd "$REPO_DIR"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Idle OpenMP threads sleep instead of spinning: on 2 shared cores spinning steals the other's time.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# glibc keeps freed tensor memory (up to 32 MB blocks, 1 GB in all) for the next batch instead of
# returning it to the kernel and faulting it in again: 3x fewer page faults, base init about 8 %
# faster on 2 cores (docs/performance.md). Other C libraries ignore these variables.
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-33554432}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-1073741824}"
DEVICE_ARG=()
if [[ -n "$DEVICE" ]]; then DEVICE_ARG=(--device "$DEVICE"); fi
LABELS_DIR="$DATA_DIR/labels"
RATIO_ARG=(--eval_resize_ratio "$EVAL_RESIZE_RATIO")
TRAIN_PER_CLASS=$(( BASE_PER_CLASS > STREAM_PER_CLASS ? BASE_PER_CLASS : STREAM_PER_CLASS ))
START=$SECONDS
mkdir -p "$OUT_DIR"
STAGE_FILE="$OUT_DIR/stage_times.tsv"      # this run's wall seconds per step (skipped steps take ~0)
printf 'step\tseconds\n' > "$STAGE_FILE"
STAGE=""
STAGE_START=$SECONDS
step() {
  if [[ -n "$STAGE" ]]; then printf '%s\t%d\n' "$STAGE" $((SECONDS - STAGE_START)) >> "$STAGE_FILE"; fi
  STAGE="$1"
  STAGE_START=$SECONDS
  printf '\n== %s (%d s)\n' "$1" $((SECONDS - START))
}
SPEED_ARG=()
if [[ "$CHANNELS_LAST" == 1 ]]; then SPEED_ARG=(--channels_last); fi
AMP_ARG=()
if [[ "$AMP" == 1 ]]; then AMP_ARG=(--amp); fi

# ---------------------------------------------------------------------------- 1. data
step "data: Fashion-MNIST -> $DATA_DIR"
IDX_ARG=(--download)
if [[ -n "$FMNIST_IDX_DIR" ]]; then
  IDX_ARG=(--idx_dir "$FMNIST_IDX_DIR")
elif [[ ! -f "$DATA_DIR/manifest.json" && ! -f data/FashionMNIST/raw/train-images-idx3-ubyte.gz ]] \
     && command -v apt-get >/dev/null && command -v dpkg >/dev/null \
     && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]]; then
    echo "installing the Debian package dataset-fashion-mnist"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
      || echo "note: apt-get could not install dataset-fashion-mnist; trying other sources"
  else
    echo "note: the Debian package dataset-fashion-mnist is not installed (as root: apt-get install" \
         "-y dataset-fashion-mnist); trying other sources"
  fi
fi
"$PYTHON" "$SCRIPT_DIR/make_fashion_mnist_imagefolder.py" "${IDX_ARG[@]}" --out_dir "$DATA_DIR" \
  --labels_dir "$LABELS_DIR" --size "$IMAGE_SIZE" --train_per_class "$TRAIN_PER_CLASS" \
  --val_per_class "$VAL_PER_CLASS"

RUNS_REMIND=()
RUNS_FINETUNE=()
RUNS_OFFLINE=()
for SEED in $SEEDS; do
  RUN_DIR="$OUT_DIR/seed_$SEED"
  BASE_DIR="$RUN_DIR/base_init"
  CKPT_FILE="ResNet18_base_${BASE_CLASSES}.pth"
  mkdir -p "$RUN_DIR"

  # -------------------------------------------------------------------- 2. base network
  step "seed $SEED: base initialization, ResNet-18 from scratch on classes 0-$((BASE_CLASSES - 1))"
  RESUME_ARG=()
  if [[ -f "$BASE_DIR/$CKPT_FILE" ]]; then RESUME_ARG=(--resume "$BASE_DIR"); fi
  "$PYTHON" "$SCRIPT_DIR/train_base_init_network_from_scratch.py" --data "$DATA_DIR" \
    --labels_dir "$LABELS_DIR" --base_max_class "$BASE_CLASSES" --num_classes "$NUM_CLASSES" \
    --epochs "$BASE_EPOCHS" -b "$BASE_BATCH" --lr "$BASE_LR" --lr_step_size "$BASE_LR_STEP" \
    --image_size "$IMAGE_SIZE" --max_per_class "$BASE_PER_CLASS" -j "$WORKERS" --seed "$SEED" \
    --save_dir "$BASE_DIR" --ckpt_file "$CKPT_FILE" "${RATIO_ARG[@]}" "${DEVICE_ARG[@]}" "${RESUME_ARG[@]}" \
    "${SPEED_ARG[@]}" "${AMP_ARG[@]}"
  CKPT="$BASE_DIR/best_$CKPT_FILE"

  # -------------------------------------------------------------------- 3. features, PQ, codes
  step "seed $SEED: G's features of the base-init images"
  "$PYTHON" "$SCRIPT_DIR/extract_features.py" --images_dir "$DATA_DIR" --label_dir "$LABELS_DIR" \
    --classifier_ckpt "$CKPT" --base_init_classes "$BASE_CLASSES" --num_classes "$NUM_CLASSES" \
    --image_size "$IMAGE_SIZE" --max_per_class "$BASE_PER_CLASS" -j "$WORKERS" \
    --save_dir "$BASE_DIR" "${RATIO_ARG[@]}" "${DEVICE_ARG[@]}" "${SPEED_ARG[@]}"
  step "seed $SEED: product quantizer (faiss) and the base-init codes"
  "$PYTHON" "$SCRIPT_DIR/fit_pq.py" --save_dir "$BASE_DIR" --num_codebooks "$NUM_CODEBOOKS" \
    --codebook_size "$CODEBOOK_SIZE" --seed "$SEED" "${DEVICE_ARG[@]}"

  # -------------------------------------------------------------------- 4-5. streaming
  COMMON=(--images_dir "$DATA_DIR" --label_dir "$LABELS_DIR" --classifier_ckpt "$CKPT"
          --base_init_dir "$BASE_DIR" --num_classes "$NUM_CLASSES" --base_init_classes "$BASE_CLASSES"
          --streaming_min_class "$BASE_CLASSES" --streaming_max_class "$NUM_CLASSES" --class_increment 1
          --max_per_class "$STREAM_PER_CLASS" --samples_per_class "$STREAM_PER_CLASS"
          --lr_step_size "$LR_STEP" --max_buffer_size "$BUFFER_SIZE" --image_size "$IMAGE_SIZE"
          --num_codebooks "$NUM_CODEBOOKS" --codebook_size "$CODEBOOK_SIZE" --num_workers "$WORKERS"
          --seed "$SEED" --resume "${RATIO_ARG[@]}" "${DEVICE_ARG[@]}")
  step "seed $SEED: REMIND streams classes $BASE_CLASSES-$((NUM_CLASSES - 1)), $STREAM_PER_CLASS images each"
  "$PYTHON" "$SCRIPT_DIR/imagenet_experiment.py" "${COMMON[@]}" --expt_name "remind_fashion_mnist_seed$SEED" \
    --save_dir "$RUN_DIR/remind" --rehearsal_samples "$REPLAY" --use_mixup --mixup_alpha "$MIXUP_ALPHA" \
    --random_resized_crops
  step "seed $SEED: fine-tune baseline (no replay, no mixup, no crops)"
  "$PYTHON" "$SCRIPT_DIR/imagenet_experiment.py" "${COMMON[@]}" --expt_name "finetune_fashion_mnist_seed$SEED" \
    --save_dir "$RUN_DIR/finetune" --rehearsal_samples 0
  step "seed $SEED: offline upper bound (F on the codes seen so far, $OFFLINE_EPOCHS epochs at each point)"
  "$PYTHON" "$SCRIPT_DIR/offline_experiment.py" --dataset imagenet "${COMMON[@]}" \
    --expt_name "offline_fashion_mnist_seed$SEED" --save_dir "$RUN_DIR/offline" --offline_epochs "$OFFLINE_EPOCHS" \
    --rehearsal_samples 0  # replay settings do not concern the offline learner
  if [[ "$KEEP_MODELS" != 1 ]]; then
    # The per-evaluation F/state copies (the reference's remind_model/ files); checkpoints/latest.pt,
    # the predictions and the results stay.
    rm -rf "$RUN_DIR/remind/remind_model" "$RUN_DIR/finetune/remind_model" "$RUN_DIR/offline/remind_model"
  fi
  RUNS_REMIND+=("$RUN_DIR/remind")
  RUNS_FINETUNE+=("$RUN_DIR/finetune")
  RUNS_OFFLINE+=("$RUN_DIR/offline")
done

# ---------------------------------------------------------------------------- 6. summary
step "summary"
join() { local IFS=,; echo "$*"; }
"$PYTHON" "$SCRIPT_DIR/compare_runs.py" "REMIND=$(join "${RUNS_REMIND[@]}")" \
  "fine-tune=$(join "${RUNS_FINETUNE[@]}")" --per_seed --json "$OUT_DIR/summary.json" \
  --plot "$OUT_DIR/comparison_plot.png" \
  --title "Fashion-MNIST: base init on 5 classes, then 1 class at a time"
"$PYTHON" "$SCRIPT_DIR/compare_runs.py" "REMIND=$(join "${RUNS_REMIND[@]}")" \
  "fine-tune=$(join "${RUNS_FINETUNE[@]}")" --per_seed --markdown > "$OUT_DIR/summary.md"
for i in "${!RUNS_REMIND[@]}"; do
  SEED_DIR="$(dirname "${RUNS_REMIND[$i]}")"
  echo
  echo "Omega_all against the offline bound, $(basename "$SEED_DIR"):"
  "$PYTHON" "$SCRIPT_DIR/compute_omega.py" --offline "${RUNS_OFFLINE[$i]}" "REMIND=${RUNS_REMIND[$i]}" \
    "fine-tune=${RUNS_FINETUNE[$i]}" --markdown "$SEED_DIR/omega.md" --json "$SEED_DIR/omega.json" \
    --plot "$SEED_DIR/omega_plot.png" --title "Fashion-MNIST $(basename "$SEED_DIR"): REMIND, fine-tune, offline"
done
echo
echo "per-run plots: ${RUNS_REMIND[0]}/accuracy_plot.png (REMIND), ${RUNS_FINETUNE[0]}/accuracy_plot.png (fine-tune)"
echo "REMIND vs fine-tune plot: $OUT_DIR/comparison_plot.png; table: $OUT_DIR/summary.md, $OUT_DIR/summary.json"
step "done"
echo
echo "wall time per step (s), also in $STAGE_FILE:"
column -t -s $'\t' "$STAGE_FILE" 2>/dev/null || cat "$STAGE_FILE"
echo
echo "inside the streaming runs (each run's log.txt):"
for RUN in "${RUNS_REMIND[@]}" "${RUNS_FINETUNE[@]}" "${RUNS_OFFLINE[@]}"; do
  grep -h "stage times" "$RUN/log.txt" | tail -1 | sed "s|^|  $RUN: |" || true
done
echo "total time: $((SECONDS - START)) s"
