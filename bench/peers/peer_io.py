# What every Python peer of the benchmark shares: one JSON line out ({"result": ...},
# {"missing": ...} when a library is not installed, {"error": ...} on failure), and which
# BLAS library the process actually loaded, read from its own memory map after the work
# (a Debian libblas.so.3 is an alternatives link: OpenBLAS, or the slow reference BLAS).
import json
import mmap
import os
import struct
import sys
import time
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


def rate(work, units, min_ms):
    """Billions of `units` per second (what one call of work() does) over calls back to back
    for at least min_ms, after one untimed call."""
    work()
    calls = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed * 1000 < min_ms:
        work()
        calls += 1
        elapsed = time.perf_counter() - start
    return units * calls / elapsed / 1e9


def run(main):
    """Runs main(input) with the JSON input from argv[1]; reports a failure as an error line."""
    try:
        emit({"result": main(json.loads(sys.argv[1]))})
    except ImportError as err:
        missing(err.name or str(err))
    except Exception:  # noqa: BLE001 - every failure must reach the benchmark as a line
        emit({"error": traceback.format_exc()})
        sys.exit(1)


def read_safetensors(path, torch):
    """name -> float32 tensor over a private (copy-on-write) map of the file: no copy, writable."""
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {entry['dtype']}; the peers read float32 weights only")
        begin, end = entry["data_offsets"]
        count = (end - begin) // 4
        flat = torch.frombuffer(data, dtype=torch.float32, count=count, offset=8 + header_len + begin)
        tensors[name] = flat.view(entry["shape"]) if entry["shape"] else flat
    return tensors
