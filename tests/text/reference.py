"""An independent reference of all-MiniLM-L6-v2 in numpy, from the same safetensors file.

Written from the BERT / sentence-transformers definitions, sharing no code with text/: its own
safetensors parsing (header JSON + numpy.frombuffer), batches padded to their longest sequence
with an additive attention mask (torch's finfo.min, as transformers' BertModel), mean pooling over
the real tokens (the mask) and L2 normalisation. numpy has no erf; GELU uses Abramowitz & Stegun
7.1.26 (|error| < 1.5e-7, about float32's rounding of the values it feeds). In float32 by default
(numpy's sgemm keeps the CI proof short on 2 cores); MiniLm(dir, np.float64) for a
float64 run.
"""
import json
import struct

import numpy as np


def load_safetensors(path, dtype):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    tensors = {}
    dtypes = {"F32": "<f4", "I64": "<i8"}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = np.frombuffer(data, dtype=dtypes[entry["dtype"]], count=(end - begin) // np.dtype(dtypes[entry["dtype"]]).itemsize,
                            offset=8 + n + begin)
        tensors[name] = raw.reshape(entry["shape"]).astype(dtype)
    return tensors


def erf(x):
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-x * x)
    return sign * y


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


class MiniLm:
    def __init__(self, model_dir, dtype=np.float32):
        with open(f"{model_dir}/config.json") as f:
            self.config = json.load(f)
        self.dtype = dtype
        self.w = load_safetensors(f"{model_dir}/model.safetensors", dtype)
        self.transposed = {}

    def linear(self, name, v):
        """v W^T + b over the last axis, as one 2-D GEMM with W^T contiguous (numpy's batched
        matmul with a transposed operand does not reach BLAS)."""
        if name not in self.transposed:
            self.transposed[name] = np.ascontiguousarray(self.w[name + ".weight"].T)
        wt = self.transposed[name]
        out = v.reshape(-1, v.shape[-1]) @ wt + self.w[name + ".bias"]
        return out.reshape(*v.shape[:-1], wt.shape[1])

    def embed(self, ids_batch):
        """ids_batch: list of id lists. Returns len x hidden, unit rows (float64)."""
        c, w = self.config, self.w
        eps, heads = c["layer_norm_eps"], c["num_attention_heads"]
        n, length = len(ids_batch), max(len(ids) for ids in ids_batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=self.dtype)
        for i, seq in enumerate(ids_batch):
            ids[i, :len(seq)] = seq
            mask[i, :len(seq)] = 1
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        additive = (1 - mask)[:, None, None, :] * np.finfo(np.float32).min
        hidden = x.shape[-1]
        d = hidden // heads
        for l in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{l}."
            dense = lambda name, v: self.linear(p + name, v)
            split = lambda v: v.reshape(n, length, heads, d).transpose(0, 2, 1, 3)
            q = split(dense("attention.self.query", x))
            k = split(dense("attention.self.key", x))
            v = split(dense("attention.self.value", x))
            scores = q @ k.transpose(0, 1, 3, 2) / self.dtype(np.sqrt(d)) + additive
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = scores / scores.sum(-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
            x = layer_norm(x + dense("attention.output.dense", context),
                           w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], eps)
            inner = dense("intermediate.dense", x)
            inner = 0.5 * inner * (1 + erf(inner / self.dtype(np.sqrt(2.0))))
            x = layer_norm(x + dense("output.dense", inner), w[p + "output.LayerNorm.weight"],
                           w[p + "output.LayerNorm.bias"], eps)
        pooled = ((x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)).astype(np.float64)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
