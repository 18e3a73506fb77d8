#!/usr/bin/env bash
# Run the CPU-sensitive tests on an emulated AVX2-only CPU (no AVX512, no VNNI, no AMX), then natively.
#
# CI may land on an AVX2-only machine while the development host has AVX512-VNNI, AMX and
# AVX512-BF16.  qemu-user (Debian: apt-get install qemu-user) runs this host's Python, numpy,
# onnxruntime and OpenVINO with CPUID reporting a Haswell: every library dispatches its
# AVX2 kernels, and edgekit.cpu must see AVX2 only (it reads CPUID, not /proc/cpuinfo, which
# under qemu-user is the host's file).
#
#   benchmarks/cpu_matrix.sh                      # default selection, emulated then native
#   benchmarks/cpu_matrix.sh --emulated-only tests/test_tflite.py -k int8
#   CPU_MODEL=Skylake-Client benchmarks/cpu_matrix.sh ...
#   PYTEST_ADDOPTS="-rfEs --durations=20" benchmarks/cpu_matrix.sh   # extra pytest options, default selection
#
# Subprocesses stay emulated: sys.executable is a wrapper beside python (removed on exit) that
# re-enters qemu (qemu's -0 sets argv[0], from which Python takes sys.executable and finds its
# prefix or venv), and `python`/`edgekit` on PATH go through it too.  Emulation is ~10-30x
# slower; one qemu process runs at a time.  Exits non-zero if either run fails.
set -euo pipefail

# Haswell without TSX and without the kernel-only features qemu's TCG does not implement
# (pcid/x2apic/tsc-deadline/invpcid): the same user-visible ISA, and no qemu warnings on
# stderr, which CLI tests read line by line.
CPU_MODEL=${CPU_MODEL:-Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid}
DEFAULT_SELECTION=(
  tests/test_cpu.py tests/test_options.py tests/test_recipes.py
  tests/test_openvino.py tests/test_openvino_ignored_scope.py tests/test_tflite.py
  tests/test_cli.py::test_quickstart_json
)

native=1
if [[ ${1:-} == --emulated-only ]]; then native=0; shift; fi
selection=("$@")
[[ ${#selection[@]} -gt 0 ]] || selection=("${DEFAULT_SELECTION[@]}")

QEMU=$(command -v qemu-x86_64 || true)
[[ -n $QEMU ]] || { echo "error: qemu-x86_64 not found; install it with: apt-get install qemu-user" >&2; exit 2; }
[[ $(uname -m) == x86_64 ]] || { echo "error: this script emulates an x86-64 CPU on an x86-64 host" >&2; exit 2; }

cd "$(dirname "$0")/.."
# The real ELF interpreter (a pyenv shim or a venv symlink would not load under qemu), and the
# folder sys.executable names: Python finds its prefix, or its venv's pyvenv.cfg, from there.
PY=$(python -c 'import os, sys; print(os.path.realpath(sys.executable))')
BIN=$(python -c 'import os, sys; print(os.path.dirname(sys.executable))')
[[ -w $BIN ]] || { echo "error: $BIN is not writable; the emulated interpreter's wrapper must live beside python" >&2; exit 2; }

wrap=$(mktemp -d "${TMPDIR:-/tmp}/cpu_matrix.XXXXXX")
emu_python="$BIN/.python-cpu-matrix-$$"
trap 'rm -rf "$wrap" "$emu_python"' EXIT
printf '#!/bin/sh\nexec "%s" -cpu "%s" -0 "$0" "%s" "$@"\n' "$QEMU" "$CPU_MODEL" "$PY" >"$emu_python"
printf '#!/bin/sh\nexec "%s" -m edgekit "$@"\n' "$emu_python" >"$wrap/edgekit"
ln -s "$emu_python" "$wrap/python"
chmod +x "$emu_python" "$wrap/edgekit"

echo "== emulated CPU: $CPU_MODEL"
PATH="$wrap:$PATH" "$emu_python" -c '
import numpy
from edgekit import cpu
f = cpu.cpu_features()
table = getattr(numpy, "_core", None) or numpy.core
print("edgekit.cpu:", f.to_json(), "vnni:", f.vnni, "bf16:", f.bf16, "amx:", f.amx)
print("numpy dispatch:", " ".join(k for k, v in table._multiarray_umath.__cpu_features__.items() if v))
if f.vnni or f.bf16 or f.amx or "avx512f" in f.features:
    raise SystemExit("error: the emulated CPU reports AVX512/VNNI/AMX; pick an AVX2-only CPU_MODEL")
'

# qemu 7.2's AVX2 VPGATHERDD faults where a real CPU does not (numpy's AVX2 np.maximum kernel on a
# (16,1,1,1) float32 array, inside NNCF: SIGSEGV under qemu, fine on this host's real CPU with numpy
# held to the same AVX2 kernels).  So numpy alone keeps to its SSE4.2 baseline kernels under
# emulation; onnxruntime, OpenVINO, XNNPACK and edgekit.cpu still see and use the emulated AVX2 CPU.
# NUMPY_AVX2=1 lets numpy dispatch AVX2 too (with a newer qemu).
if [[ ${NUMPY_AVX2:-0} != 1 ]]; then export NPY_DISABLE_CPU_FEATURES=${NPY_DISABLE_CPU_FEATURES:-AVX2,FMA3,X86_V3}; fi

# One emulated pytest per test file, so a crash or hang of the emulator costs one file's results,
# not the run's.  `-p no:benchmark`: pytest-benchmark forks `git` at session end from a process
# full of runtime threads, and a fork in a multithreaded guest can deadlock under qemu-user.
PER_FILE_TIMEOUT=${PER_FILE_TIMEOUT:-2400}
status=0
if [[ $# -gt 0 ]]; then groups=("${selection[*]}"); else groups=("${selection[@]}"); fi
for group in "${groups[@]}"; do
  echo "== pytest on the emulated CPU: $group"
  # shellcheck disable=SC2086  # a group is a word list
  PATH="$wrap:$PATH" timeout -k 30 "$PER_FILE_TIMEOUT" "$emu_python" -m pytest -q -p no:cacheprovider \
    -p no:benchmark -rfEs $group || { rc=$?; status=$rc; echo "== exit status $rc ($group)"; }
done
if [[ $native == 1 ]]; then
  unset NPY_DISABLE_CPU_FEATURES
  echo "== pytest natively: ${selection[*]}"
  python -c 'from edgekit import cpu; print("edgekit.cpu:", cpu.cpu_features().to_json())'
  python -m pytest -q -p no:cacheprovider -p no:benchmark -rfEs "${selection[@]}" || status=$?
fi
exit $status
