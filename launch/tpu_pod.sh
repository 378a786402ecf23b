#!/usr/bin/env bash
# SOO fine-tuning on a Cloud TPU pod slice: every host runs the same command; jax.distributed
# picks up the TPU environment (coordinator, process count and index) by itself.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [CONFIG] [extra --config.key=value ...]
#
# The model directory must exist on every host (or on a shared filesystem mounted at the same
# path), and train.out_dir should be a shared path (e.g. a gcsfuse mount) so checkpoints and
# resumption work across hosts.
set -euo pipefail
TPU_NAME=${1:?TPU name}; ZONE=${2:?zone}; CONFIG=${3:-configs/calmerys.py}; shift $(( $# < 3 ? $# : 3 ))
REPO_DIR=${REPO_DIR:-\$HOME/soo-jax}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd $REPO_DIR && pip install -q -r requirements.txt 'jax[tpu]' &&
  python launch/train.py --config $CONFIG $*"
