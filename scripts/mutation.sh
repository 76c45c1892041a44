#!/usr/bin/env bash
# Mutation testing with mutmut (3.x) over the modules of scripts/mutation.cfg, each against its focused tests.
#   scripts/mutation.sh [PYTHON] [NAME...]      (default: .venv/bin/python, every module of the config)
# Each module runs in its own scratch copy of the project, build/mutation/NAME (mutmut writes the mutants
# under its mutants/ there): the working tree is never mutated, and the results of a module are kept for
# `cd build/mutation/NAME && PYTHON -m mutmut results / show MUTANT`. Every run starts from no results: mutmut
# keeps a mutant's result while its function is unchanged, even when the tests changed, so a kept result could
# call a mutant killed by a test that is now gone (or survived one a new test kills).
# Prints the score of each module: killed / (killed + survived), timeouts counted as killed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(realpath -s "${1:-.venv/bin/python}")
shift || true
WANTED=" $* "
MUTMUT=("$PY" -m mutmut)
# One thread per test process: the forked mutant runs do not fight over the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install -q --disable-pip-version-check "mutmut>=3.8,<4"

summary=()
while IFS='|' read -r name files tests; do
  name=$(echo "$name" | xargs)
  [[ -z "$name" || "$name" == \#* ]] && continue
  [[ "$WANTED" == "  " || "$WANTED" == *" $name "* ]] || continue
  work="build/mutation/$name"
  mkdir -p "$work"
  # The project as the tests see it; only the files of this module are mutated.
  rm -rf "$work/casnet_core" "$work/casnet_ros" "$work/test" "$work/config" "$work/msg" "$work/mutants"
  cp -r casnet_core casnet_ros test config msg setup.py "$work/"
  {
    echo "[mutmut]"
    echo "source_paths = casnet_core"
    echo "only_mutate ="
    for file in $files; do echo "    $file"; done
    echo "pytest_add_cli_args = -p no:cacheprovider -q -x"
    echo "pytest_add_cli_args_test_selection ="
    for argument in $tests; do echo "    $argument"; done
    echo "use_git_change_detection = false"
  } > "$work/setup.cfg"
  echo "== $name: mutating $files, tests: $tests"
  (cd "$work" && "${MUTMUT[@]}" run --max-children 1 >/dev/null 2>"run.log" || { tail -20 run.log; exit 1; })
  (cd "$work" && "${MUTMUT[@]}" results --all true > results.txt 2>/dev/null || "${MUTMUT[@]}" results > results.txt)
  read -r killed survived other < <("$PY" - "$work/results.txt" <<'PY'
import sys
killed = survived = other = 0
for line in open(sys.argv[1]):
    if ":" not in line:
        continue
    status = line.rsplit(":", 1)[1].strip()
    if status in ("killed", "timeout"):
        killed += 1
    elif status == "survived":
        survived += 1
    elif status:
        other += 1
print(killed, survived, other)
PY
)
  total=$((killed + survived))
  score=$([ "$total" -gt 0 ] && echo "$((100 * killed / total)) %" || echo "-")
  line="$name: $killed killed, $survived survived ($score), $other not run (no tests / skipped / suspicious)"
  echo "$line"
  summary+=("$line")
done < <(cat scripts/mutation.cfg)

echo "== mutation scores (survivors: build/mutation/NAME/results.txt, reviewed in docs/mutation.md)"
printf '%s\n' "${summary[@]}"
