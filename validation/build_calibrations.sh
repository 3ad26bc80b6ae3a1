#!/bin/sh
# Rebuild the calibrations shipped in tokenmill/data/calibrations/ from validation/data/.
# Run from the repository root: sh validation/build_calibrations.sh
# Fit set: Vidur's operator and all-reduce profiles (A100 80GB, H100) and the Argonne static
# batches (source S14) of Llama and Mixtral models; every other source, and Argonne's other
# models, stay held out for `tokenmill validate` (docs/validation.md).
set -e
D=validation/data
OUT=tokenmill/data/calibrations
ARGONNE="$D/argonne_static_batch.csv $D/vidur_gemm_ops.csv $D/vidur_all_reduce.csv"
LABEL_V="vLLM 0.5 (pip, mid-2024), as measured by Argonne's LLM-Inference-Bench"
LABEL_T="TensorRT-LLM (mid-2024), as measured by Argonne's LLM-Inference-Bench"
MODELS="llama|mixtral"
SPREAD="expert_spread is fitted on random-token benchmark prompts, whose routing is far more concentrated than real text's; set expert_spread = 1 for uniform routing"

tokenmill calibrate --measurements $ARGONNE --chip h100 --engine vllm --models "$MODELS" \
  --engine-label "$LABEL_V" --out $OUT/h100-vllm.json
tokenmill calibrate --measurements $ARGONNE --chip h100 --engine trtllm --models "$MODELS" \
  --engine-label "$LABEL_T" --note "$SPREAD" --out $OUT/h100-trtllm.json
tokenmill calibrate --measurements $ARGONNE --chip a100-40gb --operator-chip a100 --engine vllm \
  --models "$MODELS" --engine-label "$LABEL_V" \
  --note "operator and all-reduce profiles of the A100 80GB (same GA100 silicon)" \
  --out $OUT/a100-40gb-vllm.json
tokenmill calibrate --measurements $ARGONNE --chip a100-40gb --operator-chip a100 --engine trtllm \
  --models "$MODELS" --engine-label "$LABEL_T" \
  --note "operator and all-reduce profiles of the A100 80GB (same GA100 silicon); $SPREAD" \
  --out $OUT/a100-40gb-trtllm.json
tokenmill calibrate --measurements $D/splitwise_profile.csv $D/vidur_gemm_ops.csv $D/vidur_all_reduce.csv \
  --chip a100 --engine splitwise --engine-label "Splitwise's 2023 vLLM-based profiler (DGX-A100)" \
  --out $OUT/a100-splitwise.json

# Same silicon, other memory: the fitted fractions of peak carry over; the held-out rows of
# these chips test exactly that transfer.
tokenmill calibrate --transfer-from a100-40gb-vllm --chip a100 --name a100-vllm \
  --note "A100 80GB: same GA100 silicon, 2.04 TB/s HBM2e" --out $OUT/a100-vllm.json
tokenmill calibrate --transfer-from a100-40gb-trtllm --chip a100 --name a100-trtllm \
  --note "A100 80GB: same GA100 silicon, 2.04 TB/s HBM2e" --out $OUT/a100-trtllm.json
tokenmill calibrate --transfer-from h100-vllm --chip h200 --name h200-vllm \
  --note "H200: H100 silicon with 141 GB HBM3e at 4.8 TB/s" --out $OUT/h200-vllm.json
tokenmill calibrate --transfer-from h100-trtllm --chip h200 --name h200-trtllm \
  --note "H200: H100 silicon with 141 GB HBM3e at 4.8 TB/s" --out $OUT/h200-trtllm.json
tokenmill calibrate --transfer-from a100-splitwise --chip h100 --name h100-splitwise \
  --note "held out by chip: the same profiler on DGX-H100" --out $OUT/h100-splitwise.json
