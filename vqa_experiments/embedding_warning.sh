#!/usr/bin/env bash
# Sourced by run_clevr_streaming.sh and run_tdiuc_streaming.sh: warn_if_no_glove prints a loud
# warning on stderr when the runs will not start from GloVe word embeddings (the paper's setting).
# The word-embedding init used by each run is also recorded in its results.json ("embedding_init").

# warn_if_no_glove DATASET DATA_DIR EMBEDDING_FILE PYTHON
warn_if_no_glove() {
  local dataset="$1" data_dir="$2" embedding_file="$3" python="$4" source
  if [[ -n "${embedding_file}" ]]; then return 0; fi
  # The data scripts record where the prepared matrix came from (embedding_source.source: glove or
  # random_normal) in preprocess_<ds>_summary.json.
  source="$("${python}" -c 'import json, sys
try:
    print(json.load(open(sys.argv[1]))["embedding_source"]["source"])
except Exception:
    print("unknown")' "${data_dir}/preprocess_${dataset}_summary.json" 2>/dev/null || echo unknown)"
  if [[ "${source}" == "glove" ]]; then return 0; fi
  {
    echo "################################################################################"
    echo "WARNING: no GloVe word-embedding file given (EMBEDDING_FILE is empty) and the prepared"
    echo "  ${data_dir}/embedding_init_300d_${dataset}.npy was not made from GloVe (source: ${source})."
    echo "  These runs start from a random word embedding, not the paper's GloVe 6B 300d init."
    echo "  Set EMBEDDING_FILE to a GloVe matrix (the reference's glove6b_init_300d_${dataset}.npy"
    echo "  loads as is), or rerun the preprocessing with --glove glove.6B.300d.txt."
    echo "################################################################################"
  } >&2
}
