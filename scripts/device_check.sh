#!/usr/bin/env bash
# Issue 12's GPU rows in one short run: the in-process benchmark (single model, populations of 8
# and 64, PyTorch eager beside it) and real train.py runs (the book's recipe twice, for start-up
# with a cold and a warm compilation cache; a population of 64 in float32 and in bfloat16).
#
#   bash scripts/device_check.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds Fashion-MNIST's four IDX files. Everything printed also goes to OUT_DIR/log
# (default: $OUT, else runs/device_check), with the benchmark's JSON and each run's directory
# less its checkpoints (OUT_DIR/<run>: summary, metrics, config, TensorBoard; read them with
# cnnjax.train.RunDir).
# Uses the machine's own jax/flax/optax (as on a GPU image that has them) plus the wheels under
# .gpu/whl (see BENCHMARKS.md, "GPU check"). QUICK=1 shrinks every run, to try the script on a CPU.
set -euo pipefail
export PYTHONUNBUFFERED=1
TIMEFORMAT="whole process %R s"

data_dir=${1:?usage: bash scripts/device_check.sh DATA_DIR [OUT_DIR]}
out=${2:-${OUT:-runs/device_check}}
mkdir -p "$out"
python=${PYTHON:-python3}
if [ -d .gpu/whl ] && [ ! -d .gpu/site ]; then  # wheels carried for what the image lacks
  $python -m pip install -q --no-index --no-deps --no-compile --target .gpu/site .gpu/whl/*.whl
fi
if [ -d .gpu/site ]; then export PYTHONPATH=".gpu/site:${PYTHONPATH:-}"; fi
export PYTHONPATH=".:${PYTHONPATH:-}"
export CNNJAX_CACHE_DIR=${CNNJAX_CACHE_DIR:-/tmp/cnnjax_device_check_cache}
rm -rf "$CNNJAX_CACHE_DIR"

epochs=10 pop_epochs=3 repeats=3 limit=()
if [ "${QUICK:-0}" = 1 ]; then
  epochs=1 pop_epochs=1 repeats=1
  limit=(--config.data.train_limit=2048 --config.data.test_limit=512)
fi

{
  date -u +"device check, %Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  $python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"

  echo "== benchmark.py"
  bench=(--repeats "$repeats" --out "$out/benchmark.json")
  if [ "${QUICK:-0}" = 1 ]; then bench+=(--steps 4 --populations 8 --compare-impl ""); fi
  $python scripts/benchmark.py "${bench[@]}"

  train() {  # name, then extra flags
    local name=$1; shift
    echo "== train.py: $name"
    rm -rf "/tmp/device_check_$name"
    time $python scripts/train.py --config configs/lenet.py \
      --workdir "/tmp/device_check_$name" --config.data.source=idx \
      --config.data.dir="$data_dir" --config.progress=False "${limit[@]}" "$@"
    mkdir -p "$out/$name"  # the run's files, not its checkpoints (megabytes per member)
    tar -C "/tmp/device_check_$name" --exclude=./checkpoints -cf - . | tar -C "$out/$name" -xf -
  }
  train book_cold --config.num_epochs="$epochs"
  train book_warm --config.num_epochs="$epochs"
  train pop64_f32 --config.num_epochs="$pop_epochs" --config.population.size=64
  train pop64_bf16 --config.num_epochs="$pop_epochs" --config.population.size=64 \
    --config.model.dtype=bfloat16
} 2>&1 | tee "$out/log"
