#!/usr/bin/env bash
# multinode.sh BASIS - the jobs/ scripts on a REAL multi-node Slurm: scripts/cluster-local
# makes a head node and 3 compute nodes (own network + UTS namespaces, TCP over veth pairs,
# node-local /tmp, shared run folders), runs this script again on the head node, and is
# ALWAYS torn down (trap; a leftover of a killed run is removed by the next run's "up").
# Checks:
#  1. jobs/submit-pipeline (prepare -> train -> embed -> eval) on 2 nodes x 2 ranks with
#     Open MPI's TCP transport only (OMPI_MCA_btl=self,tcp), and the same 4-rank pipeline on
#     ONE node (--nodes=1 --overcommit, shared memory): data, model and embedding bitwise
#     identical, eval.json's scores equal;
#  2. node failure: a 2 x 2 train is running; one compute node that is not the batch host
#     is powered off (link down, every process on it SIGKILLed). Slurm finds the node silent
#     (SlurmdTimeout), ends the job and requeues it (--requeue); it starts again on the two
#     remaining nodes, resumes from the last checkpoint and completes; the model is bitwise
#     equal to part 1's uninterrupted 2 x 2 model. The timeline is printed.
# Needs root (namespaces, daemons); otherwise prints SKIP and exits 0. ~3-4 minutes.
# BASIS_MULTINODE_KEEP=1 keeps the cluster's folder (runs, logs) after a success too.
set -euo pipefail
basis=$(realpath "${1:?usage: multinode.sh PATH/TO/basis}")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "SKIP: multinode.sh makes network namespaces and runs the Slurm daemons as root"; exit 0; }

if [[ ${2:-} != --on-head ]]; then
  # A fixed folder and namespace prefix: a run killed by ctest's timeout (no trap) is
  # cleaned up by the next run's "cluster-local up"; two runs at once take turns (lock).
  exec 9>/var/tmp/basis-multinode-test.lock
  flock -w 900 9 || { echo "FAIL: another multinode test held the lock for 900 s"; exit 1; }
  export CLUSTER_LOCAL_DIR=/var/tmp/basis-multinode-test CLUSTER_LOCAL_NS=bmt CLUSTER_LOCAL_NODES=3 \
    CLUSTER_LOCAL_CPUS=2
  up_log=$(mktemp "${TMPDIR:-/tmp}/basis-multinode-up.XXXXXX")
  # shellcheck disable=SC2317  # called by the trap
  cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ! "$root/scripts/cluster-local" down >>"$up_log" 2>&1 9>&-; then cat "$up_log"; echo "FAIL: scripts/cluster-local down"; rc=1; fi
    if ((rc)); then echo "multinode: FAILED; runs and logs kept in $CLUSTER_LOCAL_DIR"
    elif [[ ${BASIS_MULTINODE_KEEP:-0} == 1 ]]; then echo "multinode: kept $CLUSTER_LOCAL_DIR (BASIS_MULTINODE_KEEP=1)"
    else rm -rf "$CLUSTER_LOCAL_DIR"; fi
    rm -f "$up_log"
    exit "$rc"
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  # 9>&-: the daemons must not hold the lock (a killed run's leftovers would block the next)
  CLUSTER_LOCAL_TIMEOUT=60 "$root/scripts/cluster-local" up >"$up_log" 2>&1 9>&- || { cat "$up_log"; echo "FAIL: scripts/cluster-local up"; exit 1; }
  "$root/scripts/cluster-local" exec bash "${BASH_SOURCE[0]}" "$basis" --on-head 9>&-
  exit
fi

# ---- on the head node ------------------------------------------------------------------
work=$CLUSTER_LOCAL_DIR/runs # the shared file system (not /tmp: node-local)
mkdir -p "$work"
export BASIS_BIN=$basis BASIS_RUN_ROOT=$work BASIS_ACCOUNT='' BASIS_PARTITION='' BASIS_QOS='' \
  BASIS_SBATCH_EXTRA='' BASIS_RANKS_PER_NODE='' BASIS_JOB_SETUP='' BASIS_SITE_CONF=$root/jobs/site.conf \
  BASIS_LAUNCH=srun
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmp_h5=$root/tests/h5cmp.py
t_start=$SECONDS
# shellcheck source=tests/slurm_test_lib.sh
source "$root/tests/slurm_test_lib.sh"
JOBCOMP=$CLUSTER_LOCAL_DIR/log/jobcomp.txt NOTE_TAG=multinode
on_fail() { local rc=$?; ((rc == 0)) || { squeue || true; sinfo || true; tail -n 25 "$CLUSTER_LOCAL_DIR/log/slurmctld.log" || true; }; }
trap on_fail EXIT
field() { scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
note "cluster up: $(sinfo -h -o '%D nodes %N %C')"

# Long enough to kill a node mid-way (part 2): 1000 steps, checkpoints every 200.
opts=$work/mn.opts
small_opts "$opts"
printf -- '-steps 1000\n-checkpoint_every 200\n-monitor_every 50\n' >>"$opts"

# ---- 1. the pipeline on 2 nodes x 2 ranks (TCP) and on 1 node x 4 ranks ----------------
stages=(prepare train embed eval)
out2=$(OMPI_MCA_btl=self,tcp "$root/jobs/submit-pipeline" --run-dir "$work/n2" --ranks 4 --opts "$opts" \
  -- --nodes=2 --ntasks-per-node=2 2>&1) || die "submit-pipeline (2 nodes): $out2"
out1=$(OMPI_MCA_btl=self,vader "$root/jobs/submit-pipeline" --run-dir "$work/n1" --ranks 4 --opts "$opts" \
  -- --nodes=1 --overcommit 2>&1) || die "submit-pipeline (1 node): $out1"
ids2=() ids1=()
for s in "${stages[@]}"; do
  ids2+=("$(id_of "$s" "$out2")") ids1+=("$(id_of "$s" "$out1")")
  [[ ${ids2[-1]} =~ ^[0-9]+$ && ${ids1[-1]} =~ ^[0-9]+$ ]] || die "submit-pipeline printed no $s job id: '$out2' '$out1'"
done
wait_jobs 300 "${ids2[@]}" "${ids1[@]}"
for i in 0 1 2 3; do
  expect_completed "2-node ${stages[$i]}" "${ids2[$i]}" "$work/n2/logs/basis-${stages[$i]}-${ids2[$i]}.out"
  expect_completed "1-node ${stages[$i]}" "${ids1[$i]}" "$work/n1/logs/basis-${stages[$i]}-${ids1[$i]}.out"
  [[ $(field "${ids2[$i]}" NumNodes) == 2 ]] || die "2-node ${stages[$i]} job ran on $(field "${ids2[$i]}" NodeList)"
  [[ $(field "${ids1[$i]}" NumNodes) == 1 ]] || die "1-node ${stages[$i]} job ran on $(field "${ids1[$i]}" NodeList)"
done
for f in data.h5:/features model.h5:/network/params embedding.h5:/embedding; do
  "$cmp_h5" "$work/n2/${f%%:*}" "$work/n1/${f%%:*}" "${f#*:}" \
    || die "${f%%:*} ${f#*:}: 2 nodes x 2 ranks differs from 1 node x 4 ranks"
done
# eval_scores A.json B.json : the number of scores (all numbers but timings), if all equal
eval_scores() {
  /usr/bin/python3 - "$@" <<'EOF'
import json, sys
def scores(x, path=""):  # every number but timings
    if isinstance(x, dict):
        for k, v in x.items():
            yield from scores(v, path + "/" + k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from scores(v, "%s[%d]" % (path, i))
    elif isinstance(x, (int, float)):
        key = path.rsplit("/", 1)[-1].split("[")[0]
        if not (key.endswith("_s") or "time" in key or "seconds" in key):
            yield path, x
a, b = (dict(scores(json.load(open(f)))) for f in sys.argv[1:3])
bad = [k for k in a if a[k] != b.get(k)]
if bad or not a:
    print("differing scores:", bad[:10])
    sys.exit(1)
print(len(a))
EOF
}
nscores=$(eval_scores "$work/n2/eval.json" "$work/n1/eval.json") || die "eval.json differs between 2 nodes and 1 node: $nscores"
note "pipeline on $(field "${ids2[1]}" NodeList) (2 x 2 ranks, btl self,tcp) and on $(field "${ids1[1]}" NodeList) (1 x 4 ranks, btl self,vader): all 8 jobs COMPLETED; data, model, embedding bitwise identical, eval scores equal ($nscores numbers)"

# ---- 2. a node dies during training ------------------------------------------------------
out=$(OMPI_MCA_btl=self,tcp "$root/jobs/submit-pipeline" --run-dir "$work/nf" --ranks 4 --opts "$opts" \
  --data "$work/n2/data.h5" --stages train -- --nodes=2 --ntasks-per-node=2 2>&1) || die "submit-pipeline (node failure): $out"
id=$(id_of train "$out")
[[ $id =~ ^[0-9]+$ ]] || die "no train job id: $out"
wait_step "$work/nf/logs/train.$id.r0.log" 500 180
nodes0=$(field "$id" NodeList) batch0=$(field "$id" BatchHost)
victim=$(scontrol show hostnames "$nodes0" | grep -vx "$batch0" | head -1)
t_kill=$SECONDS
"$root/scripts/cluster-local" kill-node "$victim" 2>/dev/null
note "train job $id on $nodes0 (batch host $batch0) passed step 500: powered $victim off"
# the timeline: poll the job's state until it completes
last='' deadline=$((SECONDS + 240)) t_end='' t_again=''
while :; do
  st=$(field "$id" JobState) n=$(field "$id" Restarts) nl=$(field "$id" NodeList) reason=$(field "$id" Reason)
  [[ -n $st ]] || st=$(job_state "$id")
  cur="$st restarts=$n nodes=$nl reason=$reason"
  if [[ $cur != "$last" ]]; then
    note "  +$((SECONDS - t_kill))s job $id $cur; $victim: $(sinfo -h -n "$victim" -o '%T')"
    last=$cur
  fi
  [[ -z $t_end && $st != RUNNING ]] && t_end=$((SECONDS - t_kill))
  [[ -n $t_end && -z $t_again && $st == RUNNING ]] && t_again=$((SECONDS - t_kill))
  [[ $st == COMPLETED || $st == FAILED || $st == CANCELLED || $st == NODE_FAIL || $st == TIMEOUT ]] && break
  ((SECONDS < deadline)) || die "job $id not done 240 s after the node failure (state $cur)"
  sleep 0.5
done
log=$work/nf/logs/basis-train-$id.out
expect_completed "train after the node failure" "$id" "$log"
n=$(restarts "$id")
((n >= 1)) || die "job $id was not requeued (Restarts=$n)"
nodes1=$(field "$id" NodeList)
grep -qx "$victim" <<<"$(scontrol show hostnames "$nodes1")" && die "the requeued job ran on the dead node $victim ($nodes1)"
resumed=$(sed -n 's/^train: resuming .* at step \([0-9]*\) of 1000.*/\1/p' "$work/nf/logs/train.$id.r$n.log" | head -1)
[[ -n $resumed ]] || die "restart $n did not resume from a checkpoint (log $work/nf/logs/train.$id.r$n.log)"
"$cmp_h5" "$work/nf/model.h5" "$work/n2/model.h5" /network/params \
  || die "the run that survived the node failure differs from the uninterrupted one (max |diff| $(max_diff "$work/nf/model.h5" "$work/n2/model.h5" /network/params))"
note "node failure: killed $victim at +0s; job ended at +${t_end}s, requeued (Restarts=$n), running again at +${t_again}s on $nodes1, resumed at step $resumed, COMPLETED at +$((SECONDS - t_kill))s; /network/params bitwise equal to the uninterrupted 2 x 2 run"
note "all multi-node checks passed"
