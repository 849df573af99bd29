#!/usr/bin/env bash
# The research loop end to end, offline on CPU in about a minute: demo dataset -> tiny random Qwen3-VL ->
# SFT 2 steps -> GRPO 2 steps from that checkpoint -> sdg detect on the test split -> sdg eval.
# The numbers mean nothing (random weights); what is checked is that every stage hands the next what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=outputs/smoke
rm -rf "$OUT"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== dataset: distill + build the bundled demo sample"
"$BIN/sdg" distill sdg_data/demo/sample/records.jsonl --out "$OUT/distill" >/dev/null
"$BIN/sdg" build "$OUT/distill/distilled.jsonl" --out "$OUT/dataset" --config build_demo \
    --image-root sdg_data/demo/sample >/dev/null

echo "== tiny random Qwen3-VL (same classes as Qwen3-VL-4B)"
"$BIN/python" -m sdg_data.testkit.models "$OUT/tiny-qwen3-vl"

echo "== SFT, 2 steps"
"$BIN/sdg" train sft --config sft/smoke \
    --model_name_or_path "$OUT/tiny-qwen3-vl" --dataset_name "$OUT/dataset" --output_dir "$OUT/sft"

echo "== GRPO, 2 steps from the SFT checkpoint"
"$BIN/sdg" train grpo --config grpo/smoke \
    --model_name_or_path "$OUT/sft" --dataset_name "$OUT/dataset" --output_dir "$OUT/grpo"

echo "== detect on the test split with the GRPO checkpoint"
"$BIN/sdg" detect "$OUT/dataset" --out "$OUT/detect" --model "$OUT/grpo" --config detect/smoke

echo "== SDG-Eval of the detections"
"$BIN/sdg" eval --gt "$OUT/dataset" --pred "$OUT/detect/predictions.jsonl" --embedder lexical --out "$OUT/eval.json"
echo "done: $OUT/eval.json"
