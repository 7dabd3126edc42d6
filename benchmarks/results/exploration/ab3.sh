cd /work/wt-bench
E=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution
N=--xla_cpu_experimental_ynn_fusion_type=
run() { /work/main/.venv/bin/python benchmarks/train_step.py --batch 8 --steps 3 --warmup 1 --no_cpu_flags "$@" 2>&1 | tail -1; }
for i in 1 2; do
PYTHONPATH=/work/wt-bench run --label "after2, default flags"
PYTHONPATH=/work/wt-bench run --xla_flags=$E --label "after2, eigen conv"
PYTHONPATH=/work/wt-bench run --xla_flags=$N --label "after2, ynn off"
PYTHONPATH=/tmp/jaxcolor_before run --xla_flags=$N --label "before, ynn off"
done
