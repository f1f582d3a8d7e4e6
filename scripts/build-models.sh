#!/usr/bin/env bash
# Rebuilds the built-in world data and the expert/amateur pair from seeds (npm run models:build).
# Both models share the shape and the training data. The expert stops at step 7,000 of an
# 8,000-step schedule: there it has learned the world's arithmetic well enough but gets only
# about half of the reversed comparisons right (chosen on the validation split; README, "The
# built-in world and models"). The amateur gets 2,000 steps, so it is much weaker but still
# writes well-formed solutions. The two pretraining runs are single-threaded and run side by
# side (about 20 minutes on 2 cores). Each is resumable: run the script again after an
# interruption and it continues. MODELS_DIR (default models) is where everything goes.
set -euo pipefail
cd "$(dirname "$0")/.."
cli="node bin/lightreasoner.mjs"
out=${MODELS_DIR:-models}
data=$out/world
$cli world-data --out "$data" --train 20000 --validation 5000 --test 5000 --seed 1 > /dev/null
common=(--data "$data/train.jsonl" --tokenizer "$data/tokenizer" --lr 3e-3 --warmup 50 --log-every 500)
$cli pretrain --config models/recipe/expert.config.json --out "$out/expert" --steps 7000 --schedule-steps 8000 --seed 0 "${common[@]}" &
expert=$!
$cli pretrain --config models/recipe/amateur.config.json --out "$out/amateur" --steps 2000 --seed 1 "${common[@]}" &
amateur=$!
wait $expert
wait $amateur
