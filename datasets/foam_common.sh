# Shared helpers for the OpenFOAM sample scripts in datasets/ (sourced, not run).
# shellcheck shell=bash

FOAM_INST_DIR="${FOAM_INST_DIR:-/usr/share/openfoam}"
export FOAM_INST_DIR
FOAM_TUTORIALS_SRC="${FOAM_TUTORIALS_SRC:-/usr/share/doc/openfoam-examples/examples}"

install_hint() {
    cat >&2 <<'HINT'
OpenFOAM v1912 (Debian/Ubuntu packages) is needed to regenerate this data:
    sudo apt-get install openfoam openfoam-examples m4
(the committed samples under datasets/ do not need it).
HINT
}

# foam_setup TOOL...: load the OpenFOAM environment and check the tools exist
foam_setup() {
    local bashrc="$FOAM_INST_DIR/etc/bashrc" tool
    if [ ! -r "$bashrc" ]; then
        echo "error: $bashrc not found" >&2
        install_hint
        exit 3
    fi
    if [ ! -d "$FOAM_TUTORIALS_SRC" ]; then
        echo "error: tutorial folder $FOAM_TUTORIALS_SRC not found" >&2
        install_hint
        exit 3
    fi
    # The Debian bashrc is written for an unset-variable-tolerant shell and
    # complains about helper scripts (bin/foamEtcFile) the package does not
    # ship; the solvers only need the environment it exports (WM_PROJECT_DIR,
    # ...); without it they stop with "Could not find mandatory etc entry".
    set +eu
    # shellcheck source=/dev/null
    source "$bashrc" >/dev/null 2>&1
    set -eu
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "error: OpenFOAM tool '$tool' not on PATH" >&2
            install_hint
            exit 3
        fi
    done
    echo "OpenFOAM ${WM_PROJECT_VERSION:-unknown} from $FOAM_INST_DIR"
}

# copy_tutorial SRC DEST: copy a tutorial case and gunzip any compressed files
copy_tutorial() {
    cp -r "$1" "$2"
    find "$2" -type f -name '*.gz' -exec gunzip -f {} +
}

# set_entry DICT KEY VALUE: replace a top-level 'KEY value;' line
set_entry() {
    if ! grep -qE "^$2[[:space:]]" "$1"; then
        echo "error: no '$2' entry in $1" >&2
        exit 4
    fi
    sed -i -E "s/^$2([[:space:]]+).*;/$2\\1$3;/" "$1"
}

# run_step CASE LOGNAME CMD...: run an OpenFOAM command, log, fail loudly
run_step() {
    local case_dir="$1" log="$2"
    shift 2
    echo "  $*"
    if ! (cd "$case_dir" && "$@" >"log.$log" 2>&1); then
        echo "error: '$*' failed in $case_dir; last lines of log.$log:" >&2
        tail -n 30 "$case_dir/log.$log" >&2
        exit 5
    fi
}
