#!/usr/bin/env bash
# Start `python -m jaxcolor.train` on one machine, several local processes, a Cloud TPU VM or a
# SLURM cluster. Every process runs the same command; JAX's multi-controller runtime
# (jax.distributed) joins them into one cluster and each process feeds its own devices.
#
#   ./launch.sh local [train flags]
#   ./launch.sh local-multiprocess N [--cpu_devices K] [train flags]
#   ./launch.sh tpu-vm NAME ZONE [train flags]
#   ./launch.sh slurm [sbatch options] -- [train flags]
#
# Set DRY_RUN=1 to print the commands without running them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}
die() { echo "launch.sh: $*" >&2; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH: $2"; }
show() { printf '+'; printf ' %q' "$@"; printf '\n'; }
run() { show "$@"; [[ "${DRY_RUN:-0}" == 1 ]] || "$@"; }

free_port() {
  "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd_local() {
  cd "$here"
  run "$python" -m jaxcolor.train "$@"
}

cmd_local_multiprocess() {
  [[ $# -ge 1 && "$1" =~ ^[1-9][0-9]*$ ]] || die "local-multiprocess needs a process count N >= 1"
  local n="$1"; shift
  local devices=1
  if [[ "${1:-}" == "--cpu_devices" || "${1:-}" == "--cpu-devices" ]]; then  # the latter: its earlier name
    [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--cpu_devices needs a positive integer"
    devices="$2"; shift 2
  fi
  cd "$here"
  local port pids=() status=0
  port="$(free_port)"
  echo "launch.sh: $n processes x $devices CPU device(s), coordinator 127.0.0.1:$port"
  for ((i = 0; i < n; i++)); do
    local env=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$devices"
               "JAX_COORDINATOR_ADDRESS=127.0.0.1:$port" "JAX_NUM_PROCESSES=$n" "JAX_PROCESS_ID=$i")
    show "${env[@]}" "$python" -m jaxcolor.train "$@"
    if [[ "${DRY_RUN:-0}" != 1 ]]; then
      "${env[@]}" "$python" -m jaxcolor.train "$@" > >(sed -u "s/^/[process $i] /") 2>&1 &
      pids+=($!)
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  [[ "$status" == 0 ]] || echo "launch.sh: a process exited with status $status" >&2
  return "$status"
}

cmd_tpu_vm() {
  [[ $# -ge 2 ]] || die "tpu-vm needs NAME and ZONE: ./launch.sh tpu-vm NAME ZONE [train flags]"
  local name="$1" zone="$2"; shift 2
  need gcloud "install the Google Cloud SDK and run 'gcloud auth login'"
  need git "the code is copied from this git checkout"
  local archive
  archive="$(mktemp -d)/jaxcolor.tar.gz"
  run git -C "$here" archive --format=tar.gz -o "$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$name:~/jaxcolor.tar.gz" --zone "$zone" --worker=all
  local flags
  flags="$(printf ' %q' "$@")"
  # The code goes to ~/jaxcolor, which is also where relative paths (--config experiments/...,
  # the default --workdir runs/default) resolve. A relaunch (to resume) replaces only the files of
  # the previous archive, listed in ~/jaxcolor/.launch_files: workdirs are never in the archive
  # (runs/ is git-ignored), so every checkpoint survives. On a multi-host pod each host has its
  # own disk: give --workdir a directory all hosts share (README, "Scale-out").
  run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command \
    "set -e; mkdir -p ~/jaxcolor && cd ~/jaxcolor && if [ -f .launch_files ]; then grep -v '/\$' .launch_files | xargs -r -d '\n' rm -f --; fi && tar -xzf ~/jaxcolor.tar.gz && tar -tzf ~/jaxcolor.tar.gz > .launch_files && pip install -q -e . 'jax[tpu]' && python3 -m jaxcolor.train$flags"
}

cmd_slurm() {
  local sbatch_opts=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do sbatch_opts+=("$1"); shift; done
  [[ "${1:-}" == "--" ]] || die "slurm needs '--' between sbatch options and train flags"
  shift
  need sbatch "run this on a SLURM login node"
  local script flags
  flags="$(printf ' %q' "$@")"
  script="$(mktemp "${TMPDIR:-/tmp}/jaxcolor-slurm-XXXXXX.sh")"
  cat >"$script" <<EOF
#!/usr/bin/env bash
# One task per node (or per GPU with --ntasks-per-node=GPUS --gpus-per-task=1): every task runs
# the same command and jax.distributed.initialize() finds the cluster from SLURM's variables.
set -euo pipefail
cd $(printf '%q' "$here")
srun $(printf '%q' "$python") -m jaxcolor.train$flags
EOF
  echo "launch.sh: batch script $script:"
  cat "$script"
  run sbatch "${sbatch_opts[@]}" "$script"
}

[[ $# -ge 1 ]] || usage
sub="$1"; shift
case "$sub" in
  local) cmd_local "$@" ;;
  local-multiprocess) cmd_local_multiprocess "$@" ;;
  tpu-vm) cmd_tpu_vm "$@" ;;
  slurm) cmd_slurm "$@" ;;
  -h|--help|help) usage 0 ;;
  *) die "unknown subcommand '$sub' (expected local, local-multiprocess, tpu-vm or slurm)" ;;
esac
