#!/usr/bin/env bash
# The main job on embedded defaults: offline, CPU, no key. Grows with each stage of the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
SDG=${SDG:-.venv/bin/sdg}
DEMO=sdg_data/demo
OUT=outputs/demo
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== validate the bundled ground truth"
"$SDG" validate "$DEMO/gt.jsonl"

# 'lexical' embeds offline without a model; pass --embedder Qwen/Qwen3-Embedding-0.6B for the paper's DescCos.
echo "== SDG-Eval of the bundled detector output"
"$SDG" eval --gt "$DEMO/gt.jsonl" --pred "$DEMO/pred.jsonl" --out "$OUT/eval.json" --embedder lexical

echo "== GRPO reward of the same completions"
"$SDG" reward --gt "$DEMO/gt.jsonl" --pred "$DEMO/pred.jsonl" --out "$OUT/rewards.jsonl" --embedder lexical
echo "done: $OUT/eval.json $OUT/rewards.jsonl"
