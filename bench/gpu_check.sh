#!/usr/bin/env bash
# The GPU check in one call of the device tool (under 8 minutes on one H100/H200):
#   here, once:   .venv/bin/python bench/gpu_prepare.py          # writes .gpucheck/ (~40 MiB, git-ignored)
#   device call:  run(command="bash bench/gpu_check.sh", carry=[".gpucheck"], timeout_s=540)
# The machine has torch (CUDA) and numpy but no PyAV, no cv2.optflow and no registry: every reference travels
# in .gpucheck/. Figures land in $OUT/gpu_check.json (partial figures survive a timeout: written per stage).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
OUT="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
( cd .gpucheck && python3 - <<'PY'
import hashlib, json, pathlib
m = json.loads(pathlib.Path("manifest.json").read_text())
bad = [n for n, h in m.items() if hashlib.sha256(pathlib.Path(n).read_bytes()).hexdigest() != h]
print("inputs", "ok" if not bad else f"CHANGED: {bad}")
PY
)
timeout 480 python3 bench/gpu_check.py --data .gpucheck --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
