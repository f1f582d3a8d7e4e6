# The benchmark's memory-read peers: how fast PyTorch or numpy stream a float32 array far
# larger than the caches through the cores (a sum, which reads each byte once and writes
# nothing), repeated for at least min_ms per repeat. Decode steps at small batches read every
# weight once for few FLOPs, so this rate, not the MatMul rate, bounds them.
# Usage: memory_read.py '{"library": "torch"|"numpy", "bytes": 1073741824, "minMs": 400,
# "repeats": 5}'. PyTorch gets every core this process may use; numpy sums on one thread.
from peer_io import cores, rate, run


def main(request):
    library, size = request["library"], request["bytes"]
    if library == "torch":
        import torch

        torch.set_num_threads(cores())
        version, threads = torch.__version__, torch.get_num_threads()
        values = torch.ones(size // 4, dtype=torch.float32)
        read, nbytes = values.sum, values.numel() * 4
    elif library == "numpy":
        import numpy

        version, threads = numpy.__version__, 1
        values = numpy.ones(size // 4, dtype=numpy.float32)
        read, nbytes = values.sum, values.nbytes
    else:
        raise ValueError(f"library: {library!r} is not torch or numpy")
    rates = [rate(read, nbytes, request["minMs"]) for _ in range(request["repeats"])]
    return {"library": library, "version": version, "threads": threads, "bytes": nbytes, "gbPerSecond": rates}


if __name__ == "__main__":
    run(main)
