#!/usr/bin/env bash
# Offline streaming-VQA demo on easy-VQA (CPU, 2 cores): prepares easy-VQA in the TDIUC layout
# (questions, answer/type tables, features of a small frozen CNN, PQ codes; see
# prepare_easy_vqa_demo.sh), then runs the TDIUC protocol with a small UpDown model
# (configs/easy_vqa_demo.json) in question-type order with REMIND, Fine-Tune and offline training,
# and prints a per-type table comparing them. `make demo-vqa` runs this script.
#
# Variables (override from the environment; relative paths are taken from the current directory):
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"

OUT_DIR="${OUT_DIR:-${REPO_ROOT}/demo_output/easy_vqa}"  # everything goes here (git-ignored by default)
CONFIG="${CONFIG:-easy_vqa_demo}"                        # vqa_experiments/configs/<name>.json or a path
DATA_ORDER="${DATA_ORDER:-qtype}"                        # qtype (type blocks) or iid
SEED="${SEED:-0}"
PREPARE="${PREPARE:-1}"                                  # 0: reuse OUT_DIR/TDIUC from an earlier run
PARALLEL="${PARALLEL:-1}"                                # 1: two runs at a time (REMIND beside offline, then Fine-Tune)
PYTHON="${PYTHON:-}"
EXTRA_ARGS="${EXTRA_ARGS:-}"                             # more vqa_trainer.py flags for all three runs

if [[ -z "${PYTHON}" ]]; then
  if [[ -x "${REPO_ROOT}/.venv/bin/python" ]]; then PYTHON="${REPO_ROOT}/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
START=$(date +%s)
DATA_DIR="${OUT_DIR}/TDIUC"
RUNS="${OUT_DIR}/runs"

if [[ "${PREPARE}" == "1" ]]; then
  echo "== preparing easy-VQA in the TDIUC layout (${DATA_DIR})"
  bash "${SCRIPT_DIR}/prepare_easy_vqa_demo.sh" "${OUT_DIR}"
fi
PREP_END=$(date +%s)
# Fresh runs every time (the data may have been re-prepared).
if [[ -d "${RUNS}" ]]; then rm -rf -- "${RUNS:?}"; fi
mkdir -p "${RUNS}"

train() {  # train NAME MODE_FLAG [flags...]; one thread: the model is small, two runs share the cores
  local name="$1" flag="$2"; shift 2
  # shellcheck disable=SC2086
  "${PYTHON}" "${SCRIPT_DIR}/vqa_trainer.py" --config "${CONFIG}" --data_dir "${DATA_DIR}" \
    --data_order "${DATA_ORDER}" "${flag}" --seed "${SEED}" --device cpu --num_threads 1 \
    --expt_name "${name}" --save_dir "${RUNS}/${name}" "$@" ${EXTRA_ARGS} > "${RUNS}/${name}.out" 2>&1 \
    || { echo "run_easy_vqa_demo.sh: the ${name} run failed; its output:" >&2; tail -n 5 "${RUNS}/${name}.out" >&2; return 1; }
  grep -E "^(model|data|eval|done)" "${RUNS}/${name}.out" | sed "s/^/[${name}] /"
}

echo "== training: REMIND, offline and Fine-Tune (from REMIND's base initialisation)"
# Fine-Tune's base initialisation is identical to REMIND's (same seed and settings): it reuses
# the one REMIND saves (runs/remind/base_init.pt) instead of computing it again.
if [[ "${PARALLEL}" == "1" ]]; then
  PIDS=()
  trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
  train remind --stream_with_rehearsal & PIDS+=($!)
  train offline --offline
  while [[ ! -f "${RUNS}/remind/base_init.pt" ]] && kill -0 "${PIDS[0]}" 2>/dev/null; do sleep 2; done
  train finetune --stream --base_init_from "${RUNS}/remind" & PIDS+=($!)
  wait "${PIDS[0]}"
  wait "${PIDS[1]}"
  trap - EXIT
else
  train remind --stream_with_rehearsal
  train offline --offline
  train finetune --stream --base_init_from "${RUNS}/remind"
fi
END=$(date +%s)

echo
"${PYTHON}" "${SCRIPT_DIR}/compare_vqa_runs.py" "REMIND=${RUNS}/remind" "Fine-Tune=${RUNS}/finetune" \
  "Offline=${RUNS}/offline" --per_boundary --markdown "${OUT_DIR}/comparison.md"
echo
echo "data preparation $((PREP_END - START)) s, training and evaluation $((END - PREP_END)) s, total $((END - START)) s"
echo "results: ${RUNS}/<run>/results.json; table: ${OUT_DIR}/comparison.md"
