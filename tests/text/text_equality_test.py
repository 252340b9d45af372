#!/usr/bin/env python3
"""The text encoder's proofs against references it shares no code with (ctest: text_equality_test).

  1. Token ids: strata-text's equal Hugging Face tokenizers' (PyPI), with the model's tokenizer.json,
     on every text of the corpus (make_corpus.py: >= 2,000 texts) at max_length 256 and 16, and on
     every Unicode code point (each in "a{c}b {c}x Q{c}").
  2. Float embeddings: cosine >= 0.9999 against the numpy forward pass (reference.py) on
     every text of the corpus.
  3. int8 embeddings (cpu backend): cosine to the reference reported, min >= 0.98 asserted.
  4. emu equals cpu bit for bit (same kernels' integer arithmetic) on a few texts.

  text_equality_test.py BUILD_DIR MODEL_DIR [--work DIR] [--embed_limit N]

--embed_limit N checks the embeddings (2. and 3.) on the corpus's first N texts only; the
sanitizer builds pass it (tests/CMakeLists.txt): their instrumented forward pass is many times
slower, and a memory error shows on a few hundred texts as well as on every one. Token ids are
always checked on everything.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import MiniLm  # noqa: E402

HIDDEN = 384
FLOAT_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.98


def run_strata_text(build_dir, model_dir, texts_path, *, device="float", max_length=256,
                    ids_out=None, embeddings_out=None):
    command = [os.path.join(build_dir, "bin", "strata-text"), f"--model_dir={model_dir}",
               f"--input={texts_path}", f"--device={device}", f"--max_length={max_length}"]
    if ids_out:
        command.append(f"--ids_out={ids_out}")
    if embeddings_out:
        command.append(f"--embeddings_out={embeddings_out}")
    subprocess.run(command, check=True)


def write_texts(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps(text) + "\n")


def compare_ids(tokenizer, texts, ours_path, what):
    with open(ours_path) as f:
        ours = [json.loads(line) for line in f]
    theirs = tokenizer.encode_batch(texts)
    assert len(ours) == len(texts), (len(ours), len(texts))
    bad = [i for i, (o, t) in enumerate(zip(ours, theirs)) if o != t.ids]
    for i in bad[:5]:
        print(f"  MISMATCH {what} #{i}: {texts[i]!r}\n    tokenizers {theirs[i].ids}\n"
              f"    strata     {ours[i]}")
    print(f"token ids, {what}: {len(texts) - len(bad)}/{len(texts)} identical")
    return not bad, [t.ids for t in theirs]


def reference_embeddings(model, ids):
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), HIDDEN))
    for b in range(0, len(ids), 32):
        chosen = order[b:b + 32]
        out[chosen] = model.embed([ids[i] for i in chosen])
    return out


def cosines(ours, reference):
    ours = ours.astype(np.float64)
    return (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) *
                                        np.linalg.norm(reference, axis=1))


def read_embeddings(path):
    return np.fromfile(path, dtype="<f4").reshape(-1, HIDDEN)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("model_dir")
    parser.add_argument("--work", default=None, help="keep the files here")
    parser.add_argument("--embed_limit", type=int, default=0,
                        help="check embeddings on the first N texts only (0: all)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="strata-text-test-")
    os.makedirs(work, exist_ok=True)
    ok = True
    corpus = os.path.join(work, "corpus.jsonl")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "make_corpus.py"),
                    corpus], check=True)
    with open(corpus) as f:
        texts = [json.loads(line) for line in f]
    assert len(texts) >= 2000, len(texts)

    # 1. Token ids.
    tokenizer = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    tokenizer.no_padding()
    reference_ids = None
    for max_length in (256, 16):
        tokenizer.enable_truncation(max_length)
        ids_path = os.path.join(work, f"ids{max_length}.jsonl")
        run_strata_text(args.build_dir, args.model_dir, corpus, max_length=max_length,
                        ids_out=ids_path)
        same, theirs = compare_ids(tokenizer, texts, ids_path, f"corpus, max_length {max_length}")
        ok &= same
        if max_length == 256:
            reference_ids = theirs
    code_points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    probes = [f"a{c}b {c}x Q{c}" for c in code_points]
    probes_path = os.path.join(work, "code_points.jsonl")
    write_texts(probes_path, probes)
    tokenizer.no_truncation()
    run_strata_text(args.build_dir, args.model_dir, probes_path, ids_out=probes_path + ".ids")
    same, _ = compare_ids(tokenizer, probes, probes_path + ".ids", "every code point")
    ok &= same

    # 2. and 3. Embeddings against the float64 numpy reference.
    if args.embed_limit > 0 and args.embed_limit < len(texts):
        texts = texts[:args.embed_limit]
        reference_ids = reference_ids[:args.embed_limit]
        corpus = os.path.join(work, "corpus-embedded.jsonl")
        write_texts(corpus, texts)
        print(f"embeddings checked on the first {len(texts)} texts (--embed_limit)")
    start = time.time()
    reference = reference_embeddings(MiniLm(args.model_dir), reference_ids)
    print(f"numpy reference (float32): {len(texts)} texts, "
          f"{sum(map(len, reference_ids))} tokens in {time.time() - start:.1f} s")
    for device, bound in (("float", FLOAT_MIN_COSINE), ("cpu", INT8_MIN_COSINE)):
        path = os.path.join(work, f"embeddings-{device}.f32")
        start = time.time()
        run_strata_text(args.build_dir, args.model_dir, corpus, device=device,
                        embeddings_out=path)
        cos = cosines(read_embeddings(path), reference)
        worst = int(np.argmin(cos))
        print(f"embeddings {device}: {len(cos)} texts in {time.time() - start:.1f} s, cosine to "
              f"the reference min {cos.min():.8f} mean {cos.mean():.8f} "
              f"(worst: #{worst}, {len(reference_ids[worst])} tokens); bound {bound}")
        ok &= bool(cos.min() >= bound)
        if device == "float":
            float_embeddings = read_embeddings(path)
        else:
            to_float = cosines(read_embeddings(path), float_embeddings.astype(np.float64))
            print(f"embeddings int8 (cpu) vs float: cosine min {to_float.min():.6f} "
                  f"mean {to_float.mean():.6f}")

    # 4. emu == cpu, bit for bit, on a few texts (emu is a slow C simulation).
    few = os.path.join(work, "few.jsonl")
    write_texts(few, texts[:4] + texts[-4:])
    outputs = {}
    for device in ("cpu", "emu"):
        outputs[device] = os.path.join(work, f"few-{device}.f32")
        run_strata_text(args.build_dir, args.model_dir, few, device=device,
                        embeddings_out=outputs[device])
    identical = read_embeddings(outputs["cpu"]).tobytes() == read_embeddings(outputs["emu"]).tobytes()
    print(f"emu vs cpu on 8 texts: {'bit-identical' if identical else 'DIFFERENT'}")
    ok &= identical
    print("text_equality_test: " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
