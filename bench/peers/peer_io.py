# What every Python peer of the benchmark shares: one JSON line out ({"result": ...},
# {"missing": ...} when a library is not installed, {"error": ...} on failure), and which
# BLAS library the process actually loaded, read from its own memory map after the work
# (a Debian libblas.so.3 is an alternatives link: OpenBLAS, or the slow reference BLAS).
import json
import os
import sys
import traceback

INSTALL_HINT = "apt-get install python3-torch python3-numpy libopenblas0-openmp"


def emit(line):
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def missing(library):
    emit({"missing": library, "install": INSTALL_HINT})


def loaded_blas():
    """Real paths of the BLAS-like shared libraries mapped into this process."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            name = os.path.basename(path).lower()
            if any(key in name for key in ("blas", "mkl", "blis", "atlas")) and path not in found:
                found.append(path)
    return sorted({os.path.realpath(p) for p in found})


def cores():
    return len(os.sched_getaffinity(0))


def run(main):
    """Runs main(input) with the JSON input from argv[1]; reports a failure as an error line."""
    try:
        emit({"result": main(json.loads(sys.argv[1]))})
    except ImportError as err:
        missing(err.name or str(err))
    except Exception:  # noqa: BLE001 - every failure must reach the benchmark as a line
        emit({"error": traceback.format_exc()})
        sys.exit(1)
