# The benchmark's float32 matrix-multiply peers: X[m,k] @ W[k,n] as a linear layer computes
# it, timed with PyTorch or numpy on the same shapes ONNX Runtime is timed on, repeated for
# at least min_ms per repeat. Usage: matmul.py '{"library": "torch"|"numpy",
# "shapes": [[m,k,n], ...], "minMs": 400, "repeats": 5}'. PyTorch gets every core this
# process may use (ONNX Runtime's default); numpy's BLAS picks its own thread count.
from peer_io import cores, loaded_blas, rate, run


def main(request):
    library = request["library"]
    if library == "torch":
        import torch

        torch.set_num_threads(cores())
        version, threads = torch.__version__, torch.get_num_threads()

        def operands(m, k, n):
            gen = torch.Generator().manual_seed(1)
            x, w = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
            return lambda: torch.matmul(x, w)

    elif library == "numpy":
        import numpy

        version, threads = numpy.__version__, None

        def operands(m, k, n):
            rng = numpy.random.default_rng(1)
            x = rng.standard_normal((m, k), dtype=numpy.float32)
            w = rng.standard_normal((k, n), dtype=numpy.float32)
            return lambda: x @ w

    else:
        raise ValueError(f"library: {library!r} is not torch or numpy")
    shapes = []
    for m, k, n in request["shapes"]:
        multiply = operands(m, k, n)
        multiply()
        rates = [rate(multiply, 2 * m * k * n, request["minMs"]) for _ in range(request["repeats"])]
        shapes.append({"m": m, "k": k, "n": n, "gflops": rates})
    return {"library": library, "version": version, "threads": threads, "blas": loaded_blas(), "shapes": shapes}


if __name__ == "__main__":
    run(main)
