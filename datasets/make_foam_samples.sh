#!/usr/bin/env bash
# Regenerate the committed real foamToVTK samples under datasets/ with
# Debian's OpenFOAM v1912 (packages: openfoam openfoam-examples m4).
#
#   datasets/make_foam_samples.sh [--outdir DIR] [--only cavity|damBreak|cavity3d]
#
# Sample A  datasets/cavity/VTK/    icoFoam cavity, foamToVTK -legacy (binary,
#                                   big-endian), internal mesh + patches.
# Sample B  datasets/damBreak/VTK/  interFoam damBreak (adaptive time step, so
#                                   irregular time indices), foamToVTK default
#                                   XML layout (.vtm + folders + .vtm.series).
# Sample C  datasets/cavity3d/       a 4x3x2-cell 3-D cavity (frontAndBack made
#                                   a wall), 3 written times, legacy binary in
#                                   VTK/ and legacy ASCII -with-ids in
#                                   VTK-ascii/: the reference that
#                                   datasets/synthetic.py is checked against.
#
# All OpenFOAM work happens in a temporary folder; only the finished VTK/
# folders are copied into DIR (default: the folder holding this script).
# See datasets/README.md for what the output looks like.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
outdir="$here"
only=""
keep_tmp=0

usage() {
    sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
    echo "Options: --outdir DIR, --only cavity|damBreak|cavity3d, --keep-tmp, -h|--help"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --outdir) outdir="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        --keep-tmp) keep_tmp=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# shellcheck source=datasets/foam_common.sh
source "$here/foam_common.sh"
foam_setup blockMesh setFields icoFoam interFoam foamToVTK
tutorials="$FOAM_TUTORIALS_SRC"

work="$(mktemp -d "${TMPDIR:-/tmp}/kvis-foam-samples.XXXXXX")"
cleanup() {
    if [ "$keep_tmp" = 1 ]; then
        echo "kept work folder $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# publish CASE_DIR NAME: copy CASE_DIR/VTK to $outdir/NAME/VTK
publish() {
    local dest="$outdir/$2"
    mkdir -p "$dest"
    rm -rf "$dest/VTK"
    cp -r "$1/VTK" "$dest/VTK"
    echo "  wrote $dest/VTK ($(du -sh "$dest/VTK" | cut -f1))"
}

make_cavity() {
    echo "Sample A: incompressible/icoFoam/cavity/cavity, foamToVTK -legacy"
    local c="$work/cavity"
    copy_tutorial "$tutorials/incompressible/icoFoam/cavity/cavity" "$c"
    # endTime 0.5, deltaT 0.005 as in the tutorial; write every 10 steps
    # instead of 20 -> 11 written times (0, 0.05, ..., 0.5), indices 0..100.
    set_entry "$c/system/controlDict" writeInterval 10
    run_step "$c" blockMesh blockMesh
    run_step "$c" icoFoam icoFoam
    run_step "$c" foamToVTK foamToVTK -legacy
    publish "$c" cavity
}

make_dambreak() {
    echo "Sample B: multiphase/interFoam/laminar/damBreak/damBreak, foamToVTK (XML)"
    local c="$work/damBreak"
    copy_tutorial "$tutorials/multiphase/interFoam/laminar/damBreak/damBreak" "$c"
    # Tutorial: endTime 1, writeInterval 0.05 (adjustable). Stop at 0.35 ->
    # 8 written times; the adaptive time step makes the indices irregular.
    set_entry "$c/system/controlDict" endTime 0.35
    set_entry "$c/system/controlDict" writeInterval 0.05
    run_step "$c" blockMesh blockMesh
    run_step "$c" setFields setFields
    run_step "$c" interFoam interFoam
    run_step "$c" foamToVTK foamToVTK
    publish "$c" damBreak
}

make_cavity3d() {
    echo "Sample C: 3-D variant of icoFoam cavity, foamToVTK -legacy (binary and ASCII)"
    local c="$work/cavity3d"
    copy_tutorial "$tutorials/incompressible/icoFoam/cavity/cavity" "$c"
    # 4x3x2 cells instead of 20x20x1; frontAndBack becomes a wall so that the
    # mesh is truly 3-D; run two time steps and write each.
    sed -i -E 's/\(20 20 1\)/(4 3 2)/' "$c/system/blockMeshDict"
    sed -i -E 's/type([[:space:]]+)empty;/type\1wall;/' "$c/system/blockMeshDict"
    sed -i -E 's/type([[:space:]]+)empty;/type\1zeroGradient;/' "$c/0/p"
    sed -i -E 's/type([[:space:]]+)empty;/type\1noSlip;/' "$c/0/U"
    grep -q '(4 3 2)' "$c/system/blockMeshDict" || { echo "error: could not resize the cavity mesh" >&2; exit 4; }
    set_entry "$c/system/controlDict" endTime 0.01
    set_entry "$c/system/controlDict" writeInterval 1
    run_step "$c" blockMesh blockMesh
    run_step "$c" icoFoam icoFoam
    run_step "$c" foamToVTK foamToVTK -legacy
    run_step "$c" foamToVTK-ascii foamToVTK -legacy -ascii -with-ids -name VTK-ascii
    publish "$c" cavity3d
    rm -rf "$outdir/cavity3d/VTK-ascii"
    cp -r "$c/VTK-ascii" "$outdir/cavity3d/VTK-ascii"
}

mkdir -p "$outdir"
case "$only" in
    "") make_cavity; make_dambreak; make_cavity3d ;;
    cavity3d) make_cavity3d ;;
    cavity) make_cavity ;;
    damBreak) make_dambreak ;;
    *) echo "unknown sample: $only" >&2; exit 2 ;;
esac
echo "done: $(du -sh "$outdir" | cut -f1) in $outdir"
