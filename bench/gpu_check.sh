#!/usr/bin/env bash
# The pipeline on a CUDA machine, once, in one run that writes everything it measures as it
# goes (nothing is lost if the run is cut short):
#   1. the VGG16 profile at 600 px on a small synthetic set, every stage with
#      train.device=cuda, amp=bf16, channels_last, 4 reader processes, in dvc.yaml's order
#      (`dvc repro` and `dvc status` where dvc is installed); then step 2 killed after its
#      first checkpoint and resumed, its weights compared with the uninterrupted run's;
#   2. bench.gpu (training and inference images/s, peak memory, cache read or recompute);
#   3. step3_features and step3_rpn under torchrun with one NCCL rank (gloo on a CPU).
#
#   bash bench/gpu_check.sh [OUT]      # OUT: where the logs go (default: ./gpu_check)
#   DEVICE=cpu IMAGES=4 ITERATIONS=2 SIZE=96 BENCH_PROFILE=default BENCH_IMAGES=2 \
#     BENCH_ITERATIONS=1 bash bench/gpu_check.sh
#                                      # the script itself, on a CPU, in minutes
set -euo pipefail

out=$(realpath -m "${1:-${OUT:-gpu_check}}")
device=${DEVICE:-cuda}
images=${IMAGES:-24}
iterations=${ITERATIONS:-60}
size=${SIZE:-600}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

python - <<'EOF' | tee "$out/environment.txt"
import torch, torchvision
print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
EOF

project=$(mktemp -d)/project
mkdir -p "$project"
(cd "$repo" && git ls-files -z pipeline stages dvc.yaml params.yaml pyproject.toml |
    xargs -0 cp --parents -t "$project")
cd "$project"
python - "$device" "$images" "$iterations" "$size" <<'EOF'
import sys, yaml
device, images, iterations, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
raw = yaml.safe_load(open("params.yaml"))
raw["synthetic"].update(num_trainval=images, num_test=max(images // 2, 2),
                        min_side=size, max_side=size * 5 // 3)
raw["data"].update(min_size=size, max_size=size * 5 // 3)
raw["backbone"].update(name="vgg16", weights=None, freeze_below="conv3_1")
# the paper's 8, 16, 32 at 600 px; a smaller trial scales them with the images
raw["anchors"].update(stride=16, scales=[max(1, round(x * size / 600)) for x in (8, 16, 32)])
raw["rpn"]["channels"] = 512
raw["roi"]["fc_dim"] = 4096
raw["detect"].update(scales=[1.0], flip=False)
raw["train"].update(device=device, amp="bf16", channels_last=True, workers=4,
                    checkpoint_every=max(iterations // 2, 1))
for step in ("pretrain", "step1", "step2", "step3", "step4"):
    raw["train"][step].update(iterations=iterations, lr_steps=[], warmup=0)
yaml.safe_dump(raw, open("params.yaml", "w"))
EOF
cp params.yaml "$out/params.yaml"

stages=$(python -c "from pipeline.layout import STAGES; print(' '.join(s.name for s in STAGES))")
run_all() {
    if command -v dvc >/dev/null; then
        git init -q && dvc init -q && git add -A &&  # the stages' loggers want a commit
            git -c user.name=gpu-check -c user.email=gpu-check@localhost commit -qm check &&
            dvc repro && dvc status
    else
        echo "dvc is not installed: the stages run in dvc.yaml's order instead"
        for stage in $stages; do
            /usr/bin/time -f "$stage: %e s, %M KiB peak RSS" python -m "stages.$stage"
        done
    fi
}
echo "== 1. every stage" | tee "$out/pipeline.log"
run_all 2>&1 | tee -a "$out/pipeline.log"
cp data/eval/metrics.json "$out/metrics.json"

echo "== 1b. step 2 killed after its first checkpoint, then resumed" | tee "$out/resume.log"
reference=$(dirname "$project")/uninterrupted.pt
cp data/step2/detector.pt "$reference"
rm -rf data/step2/detector.pt data/step2/detector.pt.partial
python -m stages.step2_fast_rcnn >>"$out/resume.log" 2>&1 &
pid=$!
until [ -f data/step2/detector.pt.partial/checkpoint.pt ] || ! kill -0 $pid 2>/dev/null; do sleep 0.2; done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
python -m stages.step2_fast_rcnn 2>&1 | tee -a "$out/resume.log"
python - "$reference" <<'EOF' 2>&1 | tee -a "$out/resume.log"
import sys, torch
from pipeline.artifacts.model_files import safe_load
a = safe_load(sys.argv[1])["parts"]
b = safe_load("data/step2/detector.pt")["parts"]
worst = max((x.float() - b[p][k].float()).abs().max().item() / (x.float().abs().max().item() or 1)
            for p in a for k, x in a[p].items() if x.is_floating_point())
print(f"resumed vs uninterrupted step 2: largest difference {worst:.2e} of the tensor's range")
EOF

echo "== 2. bench.gpu" | tee "$out/bench_gpu.txt"
(cd "$repo" && python -m bench.gpu --device "$device" --profile "${BENCH_PROFILE:-vgg16}" \
    --images "${BENCH_IMAGES:-16}" --iterations "${BENCH_ITERATIONS:-10}") 2>&1 |
    tee -a "$out/bench_gpu.txt"

echo "== 3. one NCCL rank under torchrun" | tee "$out/distributed.log"
backend=$([ "$device" = cuda ] && echo nccl || echo gloo)
python - "$backend" <<'EOF'
import sys, yaml
raw = yaml.safe_load(open("params.yaml"))
raw["dist"]["backend"] = sys.argv[1]
yaml.safe_dump(raw, open("params.yaml", "w"))
EOF
for stage in step3_features step3_rpn; do  # torchrun itself: one rank joins a real group
    torchrun --standalone --nproc_per_node 1 -m "stages.$stage" 2>&1 |
        tee -a "$out/distributed.log"
done
echo "done: $out"
