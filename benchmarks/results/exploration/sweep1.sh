cd /work/wt-bench
export PYTHONPATH=/work/wt-bench
for f in "" "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution" "--xla_cpu_enable_fast_math=true" "--xla_cpu_use_onednn=true" "--xla_cpu_experimental_onednn_custom_call=true" "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY" "--xla_cpu_multi_thread_eigen=false"; do
  echo "== [$f] $(uptime)"
  /work/main/.venv/bin/python benchmarks/train_step.py --batch 8 --steps 3 --warmup 1 --no_cpu_flags --xla_flags="$f" --label="$f" 2>&1 | tail -1
done
