# PyTorch eager peer for the benchmark's decode comparison: a minimal Qwen2/Llama forward
# (RMSNorm, RoPE, grouped-query attention with a preallocated KV cache, SiLU-gated MLP, tied
# or separate LM head) over the very weights the project serves, read from the model
# directory's config.json and model.safetensors (the safetensors layout: an 8-byte header
# length, a JSON header of dtype/shape/offsets, then raw little-endian data), so the
# comparison with ONNX Runtime is of the same computation. Two tasks:
#   decode: per batch size, prefill the given prompts, then time windows of greedy decode
#           steps (logits, log-softmax and argmax for every stream, as the engine does);
#   log_probs: prefill tokens[:prefill], then feed the rest one at a time through the cache,
#           and write every position's log-softmax as float32 to a file, for the parity
#           check (the served graph gives log-probabilities, not logits).
import json
import math
import os
import time

from peer_io import cores, loaded_blas, read_safetensors, run


class Qwen2:
    def __init__(self, model_dir, torch):
        self.torch = torch
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.eps = c["rms_norm_eps"]
        self.theta = c.get("rope_theta", 10000.0)
        self.w = read_safetensors(os.path.join(model_dir, "model.safetensors"), torch)
        self.lm_head = self.w["model.embed_tokens.weight"] if c.get("tie_word_embeddings", False) else self.w["lm_head.weight"]
        half = torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        self.inv_freq = 1.0 / (self.theta**half)

    def new_cache(self, batch, length):
        shape = (batch, self.kv_heads, length, self.head_dim)
        return [(self.torch.empty(shape), self.torch.empty(shape)) for _ in range(self.layers)]

    def norm(self, x, weight):
        return x * self.torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def rope(self, x, cos, sin):
        a, b = x.chunk(2, dim=-1)
        return x * cos + self.torch.cat((-b, a), dim=-1) * sin

    def linear(self, x, name):
        return self.torch.nn.functional.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias"))

    def forward(self, ids, past, cache, all_positions):
        """ids [B, T] at positions past..past+T-1 of every row; fills cache; returns logits."""
        torch = self.torch
        batch, fresh = ids.shape
        total = past + fresh
        freqs = torch.outer(torch.arange(past, total, dtype=torch.float32), self.inv_freq)
        cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
        groups = self.heads // self.kv_heads
        causal = None
        if fresh > 1:
            keys = torch.arange(total)
            causal = keys[None, :] > (past + torch.arange(fresh))[:, None]
        h = self.w["model.embed_tokens.weight"][ids]
        for i in range(self.layers):
            p = f"model.layers.{i}"
            x = self.norm(h, self.w[p + ".input_layernorm.weight"])
            q = self.linear(x, p + ".self_attn.q_proj").view(batch, fresh, self.kv_heads, groups, self.head_dim).permute(0, 2, 3, 1, 4)
            k = self.linear(x, p + ".self_attn.k_proj").view(batch, fresh, self.kv_heads, self.head_dim).transpose(1, 2)
            v = self.linear(x, p + ".self_attn.v_proj").view(batch, fresh, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
            key_cache, value_cache = cache[i]
            key_cache[:, :, past:total] = k
            value_cache[:, :, past:total] = v
            keys, values = key_cache[:, :, None, :total], value_cache[:, :, None, :total]
            scores = torch.matmul(q, keys.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if causal is not None:
                scores = scores.masked_fill(causal, float("-inf"))
            attended = torch.matmul(scores.softmax(-1), values)
            attended = attended.permute(0, 3, 1, 2, 4).reshape(batch, fresh, self.heads * self.head_dim)
            h = h + self.linear(attended, p + ".self_attn.o_proj")
            x = self.norm(h, self.w[p + ".post_attention_layernorm.weight"])
            gate = torch.nn.functional.silu(self.linear(x, p + ".mlp.gate_proj"))
            h = h + self.linear(gate * self.linear(x, p + ".mlp.up_proj"), p + ".mlp.down_proj")
        h = self.norm(h if all_positions else h[:, -1:], self.w["model.norm.weight"])
        return torch.nn.functional.linear(h, self.lm_head)


def decode(model, torch, request):
    prompts = torch.tensor(request["prompts"], dtype=torch.long)
    prompt_len = prompts.shape[1]
    steps, repeats = request["steps"], request["repeats"]
    rows = []
    for batch in request["batches"]:
        cache = model.new_cache(batch, prompt_len + 1 + repeats * steps)
        with torch.no_grad():
            logits = model.forward(prompts[:batch], 0, cache, False)
            token = logits[:, -1].log_softmax(-1).argmax(-1, keepdim=True)
            # The first decode step sizes the buffers; it is left out of the timing.
            logits = model.forward(token, prompt_len, cache, False)
            token = logits[:, -1].log_softmax(-1).argmax(-1, keepdim=True)
            past = prompt_len + 1
            rates = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(steps):
                    logits = model.forward(token, past, cache, False)
                    token = logits[:, -1].log_softmax(-1).argmax(-1, keepdim=True)
                    past += 1
                rates.append(batch * steps / (time.perf_counter() - start))
        rows.append({"batch": batch, "tokensPerSecond": rates})
    return rows


def log_probs(model, torch, request):
    tokens, prefill = request["tokens"], request["prefill"]
    cache = model.new_cache(1, len(tokens))
    with torch.no_grad():
        out = [model.forward(torch.tensor([tokens[:prefill]]), 0, cache, True)[0]]
        for j in range(prefill, len(tokens)):
            out.append(model.forward(torch.tensor([[tokens[j]]]), j, cache, True)[0])
    rows = torch.cat(out).log_softmax(-1).contiguous()
    with open(request["logProbsFile"], "wb") as f:
        f.write(rows.numpy().tobytes())
    return {"rows": rows.shape[0], "vocab": rows.shape[1]}


def main(request):
    tasks = {"decode": lambda m, t, r: {"rows": decode(m, t, r)}, "log_probs": log_probs}
    if request.get("task") not in tasks:
        raise ValueError(f"task: {request.get('task')!r} is not decode or log_probs")
    import torch

    torch.set_num_threads(cores())
    started = time.perf_counter()
    model = Qwen2(request["modelDir"], torch)
    loaded = time.perf_counter() - started
    out = tasks[request["task"]](model, torch, request)
    return {**out, "torch": torch.__version__, "threads": torch.get_num_threads(), "blas": loaded_blas(), "loadSeconds": loaded}


if __name__ == "__main__":
    run(main)
