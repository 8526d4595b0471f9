#!/bin/bash
# Multi-node pretraining under SLURM: one task per GPU; Lightning picks up ranks from the SLURM environment.
#   sbatch configs/pretrain/slurm.sh /path/to/dataset
#SBATCH --job-name=astrofm-base
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
set -euo pipefail
DATA=${1:?usage: sbatch configs/pretrain/slurm.sh DATASET_DIR}
srun astrofm pretrain fit --config configs/pretrain/base.yaml --data.path "$DATA" \
  --trainer.num_nodes "$SLURM_NNODES" --trainer.devices "$SLURM_NTASKS_PER_NODE"
