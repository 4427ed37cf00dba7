# Sourced by scripts/reproduction*.sh (from the repository root): the runs
# directory ($1, default runs/reproduction) with the committed finished runs of
# docs/reproduction/runs copied in (metrics only, so finished members are
# skipped and a fresh checkout resumes), the interpreter, the corpus check.
runs="${1:-runs/reproduction}"
python="${PYTHON:-.venv/bin/python}"
test -d data/photo_corpus/train || { echo "no photo corpus: run scripts/photo_corpus.sh first" >&2; exit 1; }
mkdir -p "$runs"
if [[ -d docs/reproduction/runs ]]; then cp -rn docs/reproduction/runs/. "$runs"/; fi
