#!/usr/bin/env bash
# Streaming VQA on TDIUC with the UpDown-style model (the reference's run_tdiuc_experiment.sh, REMIND by default).
# Needs the prepared TDIUC files in DATA_DIR (vqa_experiments/DATA_FORMATS.md): question tables,
# dictionary, LUT, embedding init, and PQ codes + quantizer for each DATA_ORDER.
# Every variable below can be overridden from the environment, e.g.
#   MODE=finetune DATA_ORDERS=qtype bash vqa_experiments/run_tdiuc_streaming.sh
# Relative paths given in the environment are taken from the current directory; runs resume
# automatically when their save folder already holds a checkpoint.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"

DATA_DIR="${DATA_DIR:-${REPO_ROOT}/data/TDIUC}"        # prepared files (preprocess_tdiuc.py --out_dir)
DATA_ORDERS="${DATA_ORDERS:-qtype iid}"               # one run per order
MODE="${MODE:-remind}"                                # remind | finetune | offline | full
CONFIG="${CONFIG:-tdiuc_streaming}"                   # vqa_experiments/configs/<name>.json or a path
LR="${LR:-2e-3}"
SEED="${SEED:-0}"
DEVICE="${DEVICE:-}"                                  # empty: cuda if available, else cpu
REHEARSAL_MODE="${REHEARSAL_MODE:-default}"           # default (all seen samples) | limited_buffer
MAX_BUFFER_SIZE="${MAX_BUFFER_SIZE:-}"                # with limited_buffer
REPLACEMENT="${REPLACEMENT:-random}"                  # random | queue (limited_buffer eviction)
SAVE_ROOT="${SAVE_ROOT:-${REPO_ROOT}/snapshots}"
PYTHON="${PYTHON:-}"
EMBEDDING_FILE="${EMBEDDING_FILE:-}"                  # GloVe init (ntoken or ntoken-1 rows, e.g. the reference's
                                                      # glove6b_init_300d_tdiuc.npy); empty: DATA_DIR's
                                                      # embedding_init_300d_tdiuc.npy (a loud warning unless GloVe-made)
EXTRA_ARGS="${EXTRA_ARGS:-}"                          # more vqa_trainer.py flags

if [[ -z "${PYTHON}" ]]; then
  if [[ -x "${REPO_ROOT}/.venv/bin/python" ]]; then PYTHON="${REPO_ROOT}/.venv/bin/python"; else PYTHON=python3; fi
fi
case "${MODE}" in
  remind) MODE_FLAG=--stream_with_rehearsal ;;
  finetune) MODE_FLAG=--stream ;;
  offline) MODE_FLAG=--offline ;;
  full) MODE_FLAG=--full ;;
  *) echo "run_tdiuc_streaming.sh: MODE must be remind, finetune, offline or full (got ${MODE})" >&2; exit 2 ;;
esac
BUFFER_ARGS=(--rehearsal_mode "${REHEARSAL_MODE}")
if [[ "${REHEARSAL_MODE}" == "limited_buffer" ]]; then
  BUFFER_ARGS+=(--max_buffer_size "${MAX_BUFFER_SIZE}" --buffer_replacement_strategy "${REPLACEMENT}")
fi
DEVICE_ARGS=()
if [[ -n "${DEVICE}" ]]; then DEVICE_ARGS=(--device "${DEVICE}"); fi
EMBEDDING_ARGS=()
if [[ -n "${EMBEDDING_FILE}" ]]; then EMBEDDING_ARGS=(--embedding_file "${EMBEDDING_FILE}"); fi
# shellcheck source=embedding_warning.sh
source "${SCRIPT_DIR}/embedding_warning.sh"
warn_if_no_glove tdiuc "${DATA_DIR}" "${EMBEDDING_FILE}" "${PYTHON}"

for ORDER in ${DATA_ORDERS}; do
  NAME="tdiuc_${MODE}_${ORDER}"
  if [[ "${REHEARSAL_MODE}" == "limited_buffer" ]]; then NAME="${NAME}_buffer${MAX_BUFFER_SIZE}_${REPLACEMENT}"; fi
  # shellcheck disable=SC2086
  "${PYTHON}" "${SCRIPT_DIR}/vqa_trainer.py" --config "${CONFIG}" --data_dir "${DATA_DIR}" \
    --data_order "${ORDER}" "${MODE_FLAG}" "${BUFFER_ARGS[@]}" --lr "${LR}" --seed "${SEED}" \
    "${DEVICE_ARGS[@]}" "${EMBEDDING_ARGS[@]}" --expt_name "${NAME}" --save_dir "${SAVE_ROOT}/${NAME}" --resume ${EXTRA_ARGS}
done
