#!/usr/bin/env bash
# Cloud TPU VM launcher: create a TPU VM (slice), run the same jtrain command on every worker, tear it down.
#
#   scripts/launch/tpu_vm.sh create NAME ZONE ACCELERATOR [RUNTIME]   # e.g. my-run us-central2-b v4-32
#   scripts/launch/tpu_vm.sh setup  NAME ZONE                        # copy this checkout, `make install` on all workers
#   scripts/launch/tpu_vm.sh run    NAME ZONE -- train --config experiments/X.py --workdir gs://bucket/run
#   scripts/launch/tpu_vm.sh delete NAME ZONE
#
# Every worker runs the identical command; JTRAIN_DISTRIBUTED=auto makes jtrain call
# jax.distributed.initialize(), which finds the slice's coordinator itself on Cloud TPU.
# DRY_RUN=1 prints the gcloud commands instead of running them.
set -euo pipefail

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

usage() { sed -n '2,12p' "$0" >&2; exit 2; }

[ $# -ge 3 ] || usage
action=$1 name=$2 zone=$3
shift 3
case "$action" in
  create)
    [ $# -ge 1 ] || usage
    run gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$1" \
      --version "${2:-tpu-ubuntu2204-base}"
    ;;
  setup)
    run gcloud compute tpus tpu-vm scp --recurse --zone "$zone" --worker=all . "$name":jtrain
    run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all \
      --command "cd jtrain && make install && .venv/bin/pip install -q 'jax[tpu]'"
    ;;
  run)
    [ "${1:-}" = "--" ] && shift
    [ $# -ge 1 ] || usage
    printf -v args '%q ' "$@"
    run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all \
      --command "cd jtrain && JTRAIN_DISTRIBUTED=auto JTRAIN_NO_PROGRESS=1 .venv/bin/jtrain ${args% }"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet
    ;;
  *) usage ;;
esac
