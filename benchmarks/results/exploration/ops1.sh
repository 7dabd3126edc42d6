cd /work/wt-bench; export PYTHONPATH=/work/wt-bench
uptime
/work/main/.venv/bin/python benchmarks/ops.py --batch 8 --reps 3 --only conv --layouts NHWC
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution /work/main/.venv/bin/python benchmarks/ops.py --batch 8 --reps 3 --only conv --layouts NHWC
uptime
/work/main/.venv/bin/python benchmarks/ops.py --batch 8 --reps 5 --only pool,up_,concat,bn_,leaky
uptime
