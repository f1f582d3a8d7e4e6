#!/usr/bin/env python3
"""The independent side of `scripts/lora-scale.mjs`: PyTorch's own Qwen2 forward, written
here from the architecture (not from the project's code), reading the same safetensors.

1. float64 + autograd: the loss and every LoRA gradient of the batch the TypeScript side
   wrote, compared with the ONNX Runtime engine's float32 gradients.
2. float32: the same training step (frozen base, LoRA on the same modules, the LM head only at
   the labelled positions, the same soft-label KL, AdamW) timed for the tokens/s ratio.

Usage: lora_scale_reference.py <exchange dir written by lora-scale.ts> <model dir> float64|float32
One part per process, so each peak resident memory is its own. Prints one JSON line.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch

from peer_io import read_safetensors


def peak_rss_bytes():
    # This process's own peak (VmHWM). getrusage's ru_maxrss would start from the Node.js
    # parent's resident set at the fork, the weights it still holds, not PyTorch's.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line: the peak memory figure needs Linux")


def read_matrix(directory, name, shape):
    return np.fromfile(os.path.join(directory, name), dtype="<f4").reshape(shape)


class Qwen2:
    """Frozen base weights as tensors of one dtype; LoRA pairs passed to forward."""

    def __init__(self, config, weights, dtype):
        """Takes the arrays out of `weights` one at a time, so the file's copy never doubles."""
        self.c = config
        self.w = {}
        for name in list(weights):
            self.w[name] = weights.pop(name).to(dtype)
        self.dtype = dtype

    def rms(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.c["rms_norm_eps"]) * weight

    def linear(self, x, name, lora, scale):
        y = x @ self.w[name + ".weight"].T
        if name + ".bias" in self.w:
            y = y + self.w[name + ".bias"]
        if name in lora:
            a, b = lora[name]
            y = y + ((x @ a.T) * scale) @ b.T
        return y

    def loss(self, ids, rows, label_ids, label_weights, normaliser, lora, scale):
        c = self.c
        batch, seq = ids.shape
        heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
        hidden = c["hidden_size"]
        d = c.get("head_dim") or hidden // heads
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        angles = torch.arange(seq, dtype=torch.float64)[:, None] * inv[None, :]
        cos = torch.cat([angles.cos(), angles.cos()], -1).to(self.dtype)
        sin = torch.cat([angles.sin(), angles.sin()], -1).to(self.dtype)

        def rope(x):
            x1, x2 = x[..., : d // 2], x[..., d // 2 :]
            return x * cos + torch.cat([-x2, x1], -1) * sin

        causal = torch.full((seq, seq), float("-inf"), dtype=self.dtype).triu(1)
        x = self.w["model.embed_tokens.weight"][ids]
        for layer in range(c["num_hidden_layers"]):
            p = f"model.layers.{layer}"
            xn = self.rms(x, self.w[p + ".input_layernorm.weight"])
            q = self.linear(xn, p + ".self_attn.q_proj", lora, scale).view(batch, seq, heads, d).transpose(1, 2)
            k = self.linear(xn, p + ".self_attn.k_proj", lora, scale).view(batch, seq, kv, d).transpose(1, 2)
            v = self.linear(xn, p + ".self_attn.v_proj", lora, scale).view(batch, seq, kv, d).transpose(1, 2)
            q, k = rope(q), rope(k)
            k = k.repeat_interleave(heads // kv, dim=1)
            v = v.repeat_interleave(heads // kv, dim=1)
            probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + causal, dim=-1)
            out = (probs @ v).transpose(1, 2).reshape(batch, seq, heads * d)
            h = x + self.linear(out, p + ".self_attn.o_proj", lora, scale)
            hn = self.rms(h, self.w[p + ".post_attention_layernorm.weight"])
            gate = self.linear(hn, p + ".mlp.gate_proj", lora, scale)
            up = self.linear(hn, p + ".mlp.up_proj", lora, scale)
            x = h + self.linear(torch.nn.functional.silu(gate) * up, p + ".mlp.down_proj", lora, scale)
        selected = self.rms(x.reshape(batch * seq, hidden)[rows], self.w["model.norm.weight"])
        head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        logq = torch.log_softmax(selected @ head.T, dim=-1)
        picked = torch.gather(logq, 1, label_ids)
        plogp = torch.where(label_weights > 0, label_weights * torch.log(label_weights.clamp_min(1e-300)), torch.zeros_like(label_weights))
        return (plogp - label_weights * picked).sum() / normaliser


def main():
    exchange, model_dir, part = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(int(os.environ.get("LR_TORCH_THREADS", os.cpu_count() or 1)))
    spec = json.load(open(os.path.join(exchange, "batch.json")))
    config = json.load(open(os.path.join(model_dir, "config.json")))
    weights = read_safetensors(os.path.join(model_dir, "model.safetensors"), torch)
    ids = torch.tensor(spec["rows"], dtype=torch.long)
    rows = torch.tensor([b * ids.shape[1] + t for b, t in spec["positions"]], dtype=torch.long)
    width = max(len(l["ids"]) for l in spec["labels"])
    label_ids = torch.tensor([l["ids"] + [l["ids"][0]] * (width - len(l["ids"])) for l in spec["labels"]], dtype=torch.long)
    label_w = [l["weights"] + [0.0] * (width - len(l["weights"])) for l in spec["labels"]]
    scale = spec["alpha"] / spec["rank"]
    names = spec["pairs"]

    def lora_of(dtype, grad):
        out = {}
        for entry in names:
            a = torch.from_numpy(read_matrix(exchange, entry["file"] + ".A.bin", entry["a"]).copy()).to(dtype).requires_grad_(grad)
            b = torch.from_numpy(read_matrix(exchange, entry["file"] + ".B.bin", entry["b"]).copy()).to(dtype).requires_grad_(grad)
            out[entry["name"][: -len(".weight")]] = (a, b)
        return out

    if part == "float64":
        print(json.dumps({"torch": torch.__version__, **float64_gradients(exchange, names, weights, config, ids, rows, label_ids, label_w, spec, scale, lora_of), "peakRssBytes": peak_rss_bytes()}))
    else:
        print(json.dumps({"torch": torch.__version__, **float32_steps(names, weights, config, ids, rows, label_ids, label_w, spec, scale, lora_of), "peakRssBytes": peak_rss_bytes()}))


def float64_gradients(exchange, names, weights, config, ids, rows, label_ids, label_w, spec, scale, lora_of):
    model = Qwen2(config, weights, torch.float64)
    lora = lora_of(torch.float64, True)
    started = time.perf_counter()
    loss = model.loss(ids, rows, label_ids, torch.tensor(label_w, dtype=torch.float64), spec["normaliser"], lora, scale)
    loss.backward()
    f64_seconds = time.perf_counter() - started
    worst = {"name": None, "relative": 0.0}
    cosines = []
    for entry in names:
        a, b = lora[entry["name"][: -len(".weight")]]
        for which, ref in (("A", a.grad), ("B", b.grad)):
            got = torch.from_numpy(read_matrix(exchange, entry["file"] + f".grad{which}.bin", list(ref.shape)).copy()).to(torch.float64)
            rel = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()
            cosines.append(torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0).item())
            if rel > worst["relative"]:
                worst = {"name": f"{entry['name']} {which}", "relative": rel}
    return {"loss": loss.item(), "seconds": f64_seconds, "worstRelative": worst, "minCosine": min(cosines)}


def float32_steps(names, weights, config, ids, rows, label_ids, label_w, spec, scale, lora_of):
    model = Qwen2(config, weights, torch.float32)
    lora = lora_of(torch.float32, True)
    optimizer = torch.optim.AdamW([t for pair in lora.values() for t in pair], lr=1e-4, weight_decay=0.0)
    label_w32 = torch.tensor(label_w, dtype=torch.float32)
    times = []
    for _ in range(spec["torchSteps"]):
        started = time.perf_counter()
        optimizer.zero_grad()
        step_loss = model.loss(ids, rows, label_ids, label_w32, spec["normaliser"], lora, scale)
        step_loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    tokens = ids.shape[0] * ids.shape[1]
    return {"stepSeconds": times, "tokensPerSecond": tokens / sorted(times)[len(times) // 2], "threads": torch.get_num_threads()}


if __name__ == "__main__":
    main()
