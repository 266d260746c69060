# Sourced by run.sh (ESPnet convention): how jobs are run.
# The backend is chosen here, or without editing files by `./run.sh --cmd_backend slurm`
# or the CMD_BACKEND environment variable.
#   local : jobs run on this machine, at most max_jobs_run at once (default: number of cores)
#   slurm : not built yet (cluster-execution issue)
cmd_backend=${cmd_backend:-${CMD_BACKEND:-local}}
_run_jobs="python -m espnet2_ext.bin.run_jobs --backend ${cmd_backend}"
train_cmd="${_run_jobs}"
cuda_cmd="${_run_jobs} --gpu 1"
decode_cmd="${_run_jobs}"
