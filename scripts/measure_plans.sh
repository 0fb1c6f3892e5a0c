#!/usr/bin/env bash
# Plan A vs plan B, each with and without GRL, on the synthetic corpus (debug=tiny, CPU), then
# the singer probe on every export and the comparison table/plots.
#   scripts/measure_plans.sh [OUT_DIR=outputs/plans] [extra hydra overrides...]
# Results: OUT_DIR/<experiment>/ (run dirs), OUT_DIR/probe_<experiment>_<part>.json,
# OUT_DIR/compare/plans.md + PNGs. A failed run is reported and the others carry on.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-outputs/plans}; shift || true
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
CORPUS=data/synth
mkdir -p "$OUT"
[ -f "$CORPUS/train.json" ] || "$PY" -c "from audioscore.synth import make_corpus; make_corpus('$CORPUS')"

EXPS=(muq_lora muq_lora_grl hybrid_campp hybrid_campp_grl)
failed=()
for exp in "${EXPS[@]}"; do
  run="$OUT/$exp"
  if [ -f "$run/export/config.yaml" ]; then echo "== $exp: done already ($run)"; continue; fi
  echo "== train $exp -> $run"; start=$(date +%s)
  if "$PY" -m audioscore.train experiment="$exp" debug=tiny trainer.accelerator=cpu trainer.devices=1 \
      hydra.run.dir="$run" "$@" > "$OUT/$exp.log" 2>&1; then
    echo "   $(( $(date +%s) - start )) s"
  else
    echo "   FAILED (see $OUT/$exp.log)"; failed+=("$exp")
  fi
done

for exp in "${EXPS[@]}"; do
  src="$OUT/$exp/export"
  if [ ! -f "$src/config.yaml" ]; then  # trained but not exported: probe the best checkpoint
    src=$(ls "$OUT/$exp"/checkpoints/epoch_*.ckpt 2>/dev/null | tail -1)
    [ -n "$src" ] || continue
  fi
  parts=(audio); [[ $exp == hybrid* ]] && parts=(audio all)
  for part in "${parts[@]}"; do
    echo "== probe $exp ($part): $src"
    "$PY" scripts/probe_singer.py "$src" "$CORPUS/val.json" --part "$part" \
      --out "$OUT/probe_${exp}_${part}.json" || failed+=("probe:$exp:$part")
  done
done

runs=(); for exp in "${EXPS[@]}"; do [ -d "$OUT/$exp" ] && runs+=("$OUT/$exp"); done
"$PY" scripts/compare_plans.py "${runs[@]}" --out "$OUT/compare" || failed+=(compare)
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
