# Sourced by run.sh (ESPnet convention): how jobs are run. The backend is chosen here, or without
# editing files by `./run.sh --cmd_backend slurm` or the CMD_BACKEND environment variable.
#   local : jobs run on this machine, at most max_jobs_run at once (default: number of cores)
#   slurm : each ${cmd} call is one sbatch array job (one task per JOB, log at the Kaldi path);
#           per-job options (--num_threads, --mem, --time, --gpu N, --partition) become sbatch
#           options through $slurm_config (default conf/slurm.conf; or CMD_SLURM_CONFIG); sbatch,
#           squeue and scancel must work from this machine, and the repository, the venv and the
#           workdir must be on a file system the nodes share. local/slurm_local.sh starts a
#           single-node SLURM for trying it out.
#
# CPU or GPU (run.sh's train_job and infer_cmd): training runs on ${train_cmd} with --ngpu 0, on
# `${cuda_cmd} --gpu 1` with --ngpu 1, and for --ngpu N > 1 through ESPnet's own launcher, which
# submits one `${cuda_cmd} --gpu N` job (slurm: -p gpu --gres=gpu:N) running one DDP process per GPU
# (as egs2/TEMPLATE/asr1/asr.sh does):
#   python -m espnet2.bin.launch --cmd "${cuda_cmd} --num_threads N" --log LOG --ngpu N --num_nodes 1 \
#       --multiprocessing_distributed true -- python -m espnet2_ext.bin.asr_train ...
# Decoding and SSL feature/unit dumps run on ${decode_cmd}, or on `${cuda_cmd} --gpu 1` with
# --gpu_inference true. The last --gpu given wins, so `${cuda_cmd} --gpu N` asks for N GPUs.
# Multi-node training is not provided: ESPnet's launcher does it only with Kaldi's slurm.pl.
cmd_backend=${cmd_backend:-${CMD_BACKEND:-local}}
slurm_config=${slurm_config:-${CMD_SLURM_CONFIG:-$MAIN_ROOT/conf/slurm.conf}}
case $cmd_backend in
    local) _run_jobs="python -m espnet2_ext.bin.run_jobs --backend local" ;;
    slurm) _run_jobs="python -m espnet2_ext.bin.run_jobs --backend slurm --config $slurm_config" ;;
    *) echo "cmd.sh: unknown cmd_backend '$cmd_backend'; choose local or slurm" >&2; exit 2 ;;
esac
train_cmd="${_run_jobs}"
cuda_cmd="${_run_jobs} --gpu 1"
decode_cmd="${_run_jobs}"
