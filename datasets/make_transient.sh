#!/usr/bin/env bash
# Regenerate a longer real transient foamToVTK run for benchmarks (not
# committed: it is tens of MB), with Debian's OpenFOAM v1912.
#
#   datasets/make_transient.sh [--xml] [--case damBreak|cavity]
#                              [--end-time T] [--write-interval DT] OUTDIR
#
# damBreak (default): interFoam damBreak, full tutorial mesh (2268 cells),
#   endTime 1, written every 0.01 s -> 101 steps with irregular time indices.
# cavity: icoFoam cavity (400 cells), deltaT 0.005, endTime 1, written every
#   2 time steps (0.01 s) -> 101 steps (the flow is steady after ~0.1 s).
# Output: OUTDIR/<case>/VTK in the legacy layout (foamToVTK -legacy), or the
# XML layout (.vtm + folders + .vtm.series) with --xml. The script prints
# where it wrote and how long each stage took.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
layout=legacy
case_name=damBreak
end_time=1
write_interval=0.01
outdir=""

usage() {
    sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --xml) layout=xml; shift ;;
        --legacy) layout=legacy; shift ;;
        --case) case_name="$2"; shift 2 ;;
        --end-time) end_time="$2"; shift 2 ;;
        --write-interval) write_interval="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
        *)
            if [ -n "$outdir" ]; then
                echo "only one OUTDIR, please" >&2; exit 2
            fi
            outdir="$1"; shift ;;
    esac
done
if [ -z "$outdir" ]; then
    usage >&2
    exit 2
fi
case "$case_name" in
    damBreak|cavity) ;;
    *) echo "unknown case: $case_name (damBreak or cavity)" >&2; exit 2 ;;
esac

# shellcheck source=datasets/foam_common.sh
source "$here/foam_common.sh"
foam_setup blockMesh setFields icoFoam interFoam foamToVTK

mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/kvis-foam-transient.XXXXXX")"
trap 'rm -rf "$work"' EXIT

c="$work/$case_name"
t_start=$SECONDS
if [ "$case_name" = damBreak ]; then
    copy_tutorial "$FOAM_TUTORIALS_SRC/multiphase/interFoam/laminar/damBreak/damBreak" "$c"
    set_entry "$c/system/controlDict" endTime "$end_time"
    set_entry "$c/system/controlDict" writeInterval "$write_interval"
    run_step "$c" blockMesh blockMesh
    run_step "$c" setFields setFields
    run_step "$c" interFoam interFoam
else
    copy_tutorial "$FOAM_TUTORIALS_SRC/incompressible/icoFoam/cavity/cavity" "$c"
    # writeControl timeStep: the interval is a number of 0.005 s time steps
    steps_per_write="$(awk -v w="$write_interval" 'BEGIN { n = int(w / 0.005 + 0.5); if (n < 1) n = 1; print n }')"
    set_entry "$c/system/controlDict" endTime "$end_time"
    set_entry "$c/system/controlDict" writeInterval "$steps_per_write"
    run_step "$c" blockMesh blockMesh
    run_step "$c" icoFoam icoFoam
fi
t_solve=$SECONDS
if [ "$layout" = legacy ]; then
    run_step "$c" foamToVTK foamToVTK -legacy
else
    run_step "$c" foamToVTK foamToVTK
fi
t_convert=$SECONDS

dest="$outdir/$case_name"
mkdir -p "$dest"
rm -rf "$dest/VTK"
cp -r "$c/VTK" "$dest/VTK"
cp "$c"/log.* "$dest/"

if [ "$layout" = legacy ]; then
    n_steps="$(find "$dest/VTK" -maxdepth 1 -name "${case_name}_*.vtk" | wc -l)"
else
    n_steps="$(find "$dest/VTK" -maxdepth 1 -name "${case_name}_*.vtm" | wc -l)"
fi
echo "solver $((t_solve - t_start)) s, foamToVTK $((t_convert - t_solve)) s"
echo "wrote $n_steps steps ($layout layout, $(du -sh "$dest/VTK" | cut -f1)) to $dest/VTK"
