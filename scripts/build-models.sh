#!/usr/bin/env bash
# Rebuilds the built-in world data and the expert/amateur pair from seeds (npm run models:build).
# Both models share the shape; the amateur gets a shorter schedule, so it is weaker but still
# writes well-formed solutions. The two pretraining runs are single-threaded and run side by
# side. Each is resumable: run the script again after an interruption and it continues.
set -euo pipefail
cd "$(dirname "$0")/.."
cli="node bin/lightreasoner.mjs"
data=models/world
$cli world-data --out "$data" --train 20000 --test 2000 --seed 1 > /dev/null
common=(--data "$data/train.jsonl" --tokenizer "$data/tokenizer" --lr 3e-3 --warmup 50 --log-every 250)
$cli pretrain --config models/recipe/expert.config.json --out models/expert --steps 4000 --seed 0 "${common[@]}" &
expert=$!
$cli pretrain --config models/recipe/amateur.config.json --out models/amateur --steps 2000 --seed 1 "${common[@]}" &
amateur=$!
wait $expert
wait $amateur
