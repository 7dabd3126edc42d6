cd /work/wt-bench
echo "== $(date -u) $(uptime)"
PYTHONPATH=/tmp/jaxcolor_before /work/main/.venv/bin/python benchmarks/train_step.py --batch 64 --steps 3 --warmup 1 --no_cpu_flags --label "jax before, default flags" 2>&1 | tail -1
echo "== $(date -u) $(uptime)"
PYTHONPATH=/work/wt-bench /work/main/.venv/bin/python benchmarks/train_step.py --batch 64 --steps 3 --warmup 1 --label "jax after, cpu_flags" 2>&1 | tail -1
echo "== $(date -u) $(uptime)"
/work/torchvenv/bin/python benchmarks/train_step.py --framework torch --batch 64 --steps 3 --warmup 1 --label "torch eager" 2>&1 | tail -1
echo "== $(date -u) $(uptime)"
/work/torchvenv/bin/python benchmarks/train_step.py --framework torch --torch_compile --batch 64 --steps 3 --warmup 1 --label "torch compile" 2>&1 | tail -1
echo "== $(date -u) $(uptime)"
