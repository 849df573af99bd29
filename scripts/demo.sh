#!/usr/bin/env bash
# The main job on embedded defaults: offline, CPU, no key. Grows with each stage of the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
SDG=${SDG:-.venv/bin/sdg}
DEMO=sdg_data/demo
OUT=outputs/demo
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# quiet: no progress bars or library warnings on 24 images (VERBOSE=1 make demo shows them)
if [ -z "${VERBOSE:-}" ]; then
    export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error \
        TRANSFORMERS_NO_ADVISORY_WARNINGS=1 PYTHONWARNINGS=ignore
fi
start=$(date +%s)

echo "== generate: the four generator classes as tiny random pipelines (noise images; real ids need the hub)"
"${PY:-.venv/bin/python}" -m sdg_data.testkit.pipelines "$OUT/tiny-pipelines" >/dev/null
"$SDG" generate --prompts "$DEMO/sample/records.jsonl" --out "$OUT/generate" \
    --config generate_tiny --model-root "$OUT/tiny-pipelines"

echo "== validate the bundled annotated sample (24 images, 4 generators)"
"$SDG" validate "$DEMO/sample/records.jsonl"

echo "== distill with the offline template teacher (use --teacher openai --base-url ... for a real VLM)"
"$SDG" distill "$DEMO/sample/records.jsonl" --out "$OUT/distill"

echo "== build the dataset (annotations, sft, grpo, test); the image folder distill checked travels with its output"
"$SDG" build "$OUT/distill/distilled.jsonl" --out "$OUT/dataset" --config build_demo

echo "== dataset statistics and report"
"$SDG" stats "$OUT/dataset" --report "$OUT/report.html"

echo "== draw a few images with their boxes"
"$SDG" viz "$OUT/dataset" --out "$OUT/viz" --limit 6

# 'lexical' embeds offline without a model; pass --embedder Qwen/Qwen3-Embedding-0.6B for the paper's DescCos.
echo "== sanity check: SDG-Eval of the test split against itself (every F1 must be 1)"
"$SDG" eval --gt "$OUT/dataset" --pred "$OUT/dataset" --out "$OUT/test_self_eval.json" --embedder lexical

echo "== SDG-Eval of the bundled detector output"
"$SDG" eval --gt "$DEMO/gt.jsonl" --pred "$DEMO/pred.jsonl" --out "$OUT/eval.json" --embedder lexical

echo "== GRPO reward of the same completions"
"$SDG" reward --gt "$DEMO/gt.jsonl" --pred "$DEMO/pred.jsonl" --out "$OUT/rewards.jsonl" --embedder lexical

echo "== refine: the editor's request bundles (dry-run), then a tiny local editor (FLUX.1 Kontext's classes)"
"$SDG" refine "$DEMO/sample/records.jsonl" --out "$OUT/refine-bundles" --backend dry-run
"${PY:-.venv/bin/python}" -m sdg_data.testkit.pipelines "$OUT/tiny-edit" --only flux1-kontext >/dev/null
"$SDG" refine "$DEMO/sample/records.jsonl" --out "$OUT/refine" --config tiny \
    --model "$OUT/tiny-edit/flux1-kontext" --limit 3

echo "== blind A/B tally: SDG's editor requests against the caption-only baseline, judged by two simulated annotators"
"$SDG" refine "$DEMO/sample/records.jsonl" --out "$OUT/refine-fixed" --backend dry-run --mode caption-only
"${PY:-.venv/bin/python}" -m sdg_data.testkit.judging "$OUT/refine-bundles/refined.jsonl" \
    "$OUT/refine-fixed/refined.jsonl" "$OUT/judging-export.json" >/dev/null
"$SDG" annotate judge-pull --from-export "$OUT/judging-export.json" --out "$OUT/judged.jsonl"

echo "== a simulated team of three (good, fair, weak) on the sample, 4 images as gold: each one's gold score, then"
echo "   the earliest annotation against the consensus of the three, scored on the other images' own labels"
"${PY:-.venv/bin/python}" -m annotation.simteam "$DEMO/sample/records.jsonl" "$OUT/team" >/dev/null
TEAM=(--from-export "$OUT/team/export.json" --gold-file "$OUT/team/gold.jsonl" --embedder lexical)
"$SDG" annotate status "${TEAM[@]}" --gold-min-tasks 3 | sed -n '/scores against gold/,$p'
for policy in primary consensus; do
    "$SDG" annotate pull "${TEAM[@]}" --consolidation "$policy" --out "$OUT/team/$policy.jsonl" | grep consensus || true
done
# scored where consensus reached a verdict (the images it leaves out need more eyes: sdg annotate escalate)
"${PY:-.venv/bin/python}" -c 'import json, sys; keep = {json.loads(x)["image_id"] for x in open(sys.argv[1])}
sys.stdout.writelines(x for x in open(sys.argv[2]) if json.loads(x)["image_id"] in keep)' \
    "$OUT/team/consensus.jsonl" "$OUT/team/reference.jsonl" > "$OUT/team/reference-resolved.jsonl"
for policy in primary consensus; do
    "$SDG" eval --gt "$OUT/team/reference-resolved.jsonl" --pred "$OUT/team/$policy.jsonl" \
        --out "$OUT/team/eval-$policy.json" --embedder lexical >/dev/null
done
"$SDG" compare "$OUT/team/eval-primary.json" "$OUT/team/eval-consensus.json" | grep -E "^(B - A|metric|[a-z]+/(DetTypeF1|ClnAcc|BoxF1@0.5) )"

echo "== RichHF-18K interop on a synthetic TFRecord drawn from the sample's boxes (every F1 must be 1)"
"${PY:-.venv/bin/python}" -m sdg_data.testkit.richhf "$DEMO/sample/records.jsonl" "$OUT/richhf" >/dev/null
"$SDG" import richhf "$OUT/richhf/test.tfrecord" --images "$DEMO/sample/images" \
    --captions "$OUT/richhf/captions.jsonl" --out "$OUT/richhf/records.jsonl" --min-pixels 1
"$SDG" eval-image-level --gt "$OUT/richhf/records.jsonl" --pred "$DEMO/sample/records.jsonl" \
    --out "$OUT/richhf/table3.json"
cat <<EOF

done in $(( $(date +%s) - start )) s. Where to look first:
  $OUT/report.html          the dataset report: composition, plots, a gallery with the boxes (open in a browser)
  $OUT/viz/                 images drawn with their numbered boxes
  $OUT/dataset/             the Hugging Face dataset: datasets.load_dataset("$OUT/dataset", "sft")
  $OUT/eval.json            SDG-Eval of the bundled detector output (the table above)
  $OUT/refine-bundles/      what an image editor would be sent for each defective image
Next: README "Your first real dataset" (your prompts and images, a teacher behind an API, a team in Label Studio).
EOF
if [ -z "$("${PY:-.venv/bin/python}" -c 'from sdg_data.dataset.fonts import cjk_font_path; print(cjk_font_path() or "")')" ]; then
    echo "note: no CJK font is installed, so Chinese notes in the drawn images (viz/) show as boxes; the HTML report"
    echo "      shows them in your browser's fonts. Debian/Ubuntu: sudo apt-get install fonts-noto-cjk"
fi
