#!/usr/bin/env bash
# One reproduction entry per paper: run its sweep, then write its report to results/reproduce/<paper>/.
#   bash scripts/reproduce.sh <paper> [smoke|paper] [extra hydra overrides...]
#   paper: empirical | delentropy | dermatology | medigan        scale: smoke (CPU, minutes; default) | paper (cluster)
# e.g.  bash scripts/reproduce.sh delentropy
#       bash scripts/reproduce.sh empirical paper hydra/launcher=slurm hydra.launcher.partition=gpu device=cuda
# The sweep is `medsynbench train --multirun experiment=reproduce_<paper> scale=<scale>` (conf/experiment/ and
# conf/scale/<paper>/); relaunching resumes it (finished runs are skipped, interrupted ones resume). The datasets are
# read from $MEDSYNBENCH_SHARED_DATA, default ../shared/data next to the repository. The report is
# `medsynbench report out_dir=results/reproduce/<paper> +filter.experiment_name=reproduce-<paper>-<scale>`.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 ]] || usage
paper="$1"; shift
scale="smoke"
if [[ $# -ge 1 && ( "$1" == smoke || "$1" == paper ) ]]; then scale="$1"; shift; fi
case "$paper" in
  empirical|delentropy|dermatology|medigan) ;;
  -h|--help) usage ;;
  *) echo "reproduce.sh: unknown paper '$paper'; choose one of: empirical, delentropy, dermatology, medigan" >&2; exit 2 ;;
esac

# The staged datasets each entry reads by default (conf/scale/<paper>/<scale>.yaml and the experiment's dataset).
declare -A NEEDS=(
  [empirical:smoke]="kvasir-seg-256"        [empirical:paper]="acdc-slices"
  [delentropy:smoke]="kvasir-seg-256"       [delentropy:paper]="kvasir-seg-256 isic2018-task1-256 kermany-chest-xray-224"
  [dermatology:smoke]="isic2018-task1-256"  [dermatology:paper]="isic2018-task1-256"
  [medigan:smoke]="kvasir-seg-256"          [medigan:paper]="kvasir-seg-256"
)
data_root="${MEDSYNBENCH_SHARED_DATA:-$(pwd)/../shared/data}"
if [[ ! -d "$data_root" ]]; then
  echo "reproduce.sh: the datasets folder $data_root does not exist. The reproductions read the staged datasets" \
       "from ../shared/data next to the repository; set MEDSYNBENCH_SHARED_DATA=/path/to/data to use another folder." >&2
  exit 3
fi
data_root="$(cd "$data_root" && pwd)"
export MEDSYNBENCH_SHARED_DATA="$data_root"
custom_dataset=0
for arg in "$@"; do [[ "$arg" == dataset=* || "$arg" == dataset.root=* ]] && custom_dataset=1; done
if [[ $custom_dataset == 0 ]]; then
  for folder in ${NEEDS[$paper:$scale]}; do
    if [[ ! -d "$data_root/$folder" ]]; then
      echo "reproduce.sh: dataset folder $data_root/$folder is missing: the $paper reproduction ($scale) needs it" \
           "(see $data_root/README.md, or choose another dataset with a dataset=<name> override)." >&2
      exit 3
    fi
  done
fi
[[ -x .venv/bin/medsynbench ]] || { echo "reproduce.sh: .venv/bin/medsynbench not found; run bash scripts/setup_env.sh" >&2; exit 3; }

experiment_name="reproduce-$paper-$scale"
out_dir="results/reproduce/$paper"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"
if [[ "$scale" == paper ]]; then
  echo "reproduce.sh: scale=paper is sized for a GPU cluster (e.g. add hydra/launcher=slurm device=cuda" \
       "hydra.launcher.gpus_per_node=1); on this machine it runs sequentially." >&2
fi

start=$(date +%s)
echo "== $experiment_name: medsynbench train --multirun experiment=reproduce_$paper scale=$scale $*"
.venv/bin/medsynbench train --multirun "experiment=reproduce_$paper" "scale=$scale" "$@"
trained=$(date +%s)
echo "== report: medsynbench report out_dir=$out_dir +filter.experiment_name=$experiment_name"
report_rc=0
.venv/bin/medsynbench report "out_dir=$out_dir" "+filter.experiment_name=$experiment_name" || report_rc=$?
end=$(date +%s)
fmt() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }
echo "== $experiment_name wall time: $(fmt $((end - start))) (sweep $(fmt $((trained - start))), report $(fmt $((end - trained))))"
if [[ $report_rc != 0 ]]; then
  echo "reproduce.sh: the report failed (exit $report_rc); the sweep's records are in the store: rerun" \
       "'.venv/bin/medsynbench report out_dir=$out_dir +filter.experiment_name=$experiment_name'" >&2
  exit "$report_rc"
fi
echo "== report written to $out_dir/ (report.html)"
