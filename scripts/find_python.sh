#!/usr/bin/env bash
# Prints the absolute path of a working Python interpreter for a version or a command.
#
#   bash scripts/find_python.sh 3.12          # or python3.12, or /usr/bin/python3.10
#
# A command is tried first (PATH, or the path as given), but only if it runs: a pyenv shim of a version
# that is not the active one exists on PATH and fails. Then pyenv's versions folder (newest patch release
# of the asked X.Y), then the usual system places. One line on stderr and exit 1 when none runs.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 VERSION|COMMAND (e.g. 3.12, python3.10, /usr/bin/python3)" >&2
    exit 2
fi
asked="$1"

# Runs, and prints its own resolved path (a venv's python stays the venv's, a shim becomes the real one).
runs() {
    "$1" -c 'import sys; print(sys.executable)' 2>/dev/null
}

candidates=()
if [[ "$asked" =~ ^[0-9]+\.[0-9]+$ ]]; then
    version="$asked"
    candidates+=("python$version")
else
    candidates+=("$asked")
    version="$(basename "$asked" | sed -nE 's/^python([0-9]+\.[0-9]+)$/\1/p')"
fi
if [[ -n "$version" ]]; then
    pyenv_root="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
    # Newest patch release first (3.12.10 before 3.12.9).
    while IFS= read -r folder; do
        candidates+=("$folder/bin/python$version")
    done < <(ls -d "$pyenv_root/versions/$version".* 2>/dev/null | sort -t. -k3,3nr)
    candidates+=("/usr/local/bin/python$version" "/usr/bin/python$version")
fi

for candidate in "${candidates[@]}"; do
    if path="$(runs "$candidate")" && [[ -n "$path" ]]; then
        if [[ -n "$version" ]]; then
            actual="$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            [[ "$actual" == "$version" ]] || continue
        fi
        echo "$path"
        exit 0
    fi
done
echo "error: no working Python ${version:-$asked} found (tried: ${candidates[*]}); install it or pass PYTHON=/path/to/python" >&2
exit 1
