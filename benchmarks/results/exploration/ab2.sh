cd /work/wt-bench
E=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution
run() { /work/main/.venv/bin/python benchmarks/train_step.py --batch 8 --steps 3 --warmup 1 --no_cpu_flags "$@" 2>&1 | tail -1; }
for i in 1 2; do
PYTHONPATH=/tmp/jaxcolor_before run --label "before, default flags"
PYTHONPATH=/tmp/jaxcolor_before run --xla_flags=$E --label "before, eigen conv"
PYTHONPATH=/work/wt-bench run --label "after, default flags"
PYTHONPATH=/work/wt-bench run --xla_flags=$E --label "after, eigen conv"
done
