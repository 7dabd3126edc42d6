cd /work/wt-bench; export PYTHONPATH=/work/wt-bench
export XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution
/work/main/.venv/bin/python benchmarks/ops.py --batch 8 --reps 3 --only conv_wgrad --layouts NHWC
unset XLA_FLAGS
/work/main/.venv/bin/python benchmarks/ops.py --batch 8 --reps 3 --only conv_wgrad_ --layouts NHWC
