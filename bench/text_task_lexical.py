#!/usr/bin/env python3
"""The text task with a frozen lexical view beside the encoder (docs/text-task.md, "A lexical view").

  text_task_lexical.py DATA.jsonl [--cache_dir=.tools/cache/text-task] [--path=cpu]
                       [--buckets=2048,4096] [--select=mod,df] [--weights=0.5,0.7,1] [--short]

The experiment behind the `lexical` stage, in numpy on the embeddings strata-bench-text-task
cached (run it first on DATA.jsonl; `--short` needs the same for the short descriptions, see
below). Every feature map is frozen or fit in closed form, and every head is the UpperTier's
ridge solve (G + lambda I) W = Q with one-hot targets and no bias, as in the C++ bench:

  emb      the encoder's 384-value embedding (the cache of --path);
  short    the embedding of the short description alone (the text up to its first ". "), from the
           cache of a second data file whose texts are those (written by --write_short);
  lex mod N  hashed unigrams and bigrams of the text: lower-cased ASCII, tokens are runs of
           [a-z0-9] and bytes >= 0x80 (UTF-8 stays whole), bigrams of adjacent tokens; each
           hashed by CRC-32C into N buckets; tf = 1 + ln(count), times
           idf = ln((1 + n) / (1 + df)) + 1 with df counted per bucket on the training texts,
           buckets with df < 2 zeroed (scikit-learn's min_df=2); the row L2-normalised, then
           scaled by `weight` (the view's share against the unit-norm embedding).
  lex df N   the same grams hashed into 2^20 buckets, of which the N with the highest df are
           kept (model::LexicalView, the spec's `lexical features=N`: fewer collisions at the
           same width).

Lambda (and the lexical weight) are chosen on the validation part of train (sources with
crc32c % 5 == 0, as the C++ bench and the TF-IDF baseline), the head is refit on all of train and
scored on test once. The head's absorb cost is D^2/2 multiply-adds a sample (G's symmetric
update); the printout gives D and that count.
"""
import argparse
import json
import math
import os
import re
import sys
import time

import numpy as np
import scipy.linalg
import scipy.sparse as sp

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 & -(_c & 1))
    _CRC_TABLE.append(_c)


def crc32c_extend(crc, data):
    """CRC-32C (Castagnoli) continuing `crc`, as base/crc32c.h's Crc32cExtend."""
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def texts_digest(texts):
    """text::TextsDigest: the cache key of strata-bench-text-task."""
    crc = 0
    for t in texts:
        b = t.encode("utf-8")
        crc = crc32c_extend(crc, len(b).to_bytes(8, "little"))
        crc = crc32c_extend(crc, b)
    return crc


def load_embeddings(cache_dir, texts, path, max_length=256):
    name = f"{texts_digest(texts):08x}-{len(texts)}-{path}-L{max_length}.f32"
    full = os.path.join(cache_dir, name)
    if not os.path.exists(full):
        sys.exit(f"no cached embeddings {full}: run strata-bench-text-task --paths={path} first")
    return np.fromfile(full, dtype=np.float32).reshape(len(texts), -1).astype(np.float64)


TOKEN = re.compile(rb"[a-z0-9\x80-\xff]+")


def tokens(text):
    return TOKEN.findall(text.encode("utf-8").lower())


def hashed_counts(texts, buckets, seed=0):
    """Sparse (n x buckets) counts of hashed unigrams and bigrams."""
    rows, cols = [], []
    cache = {}
    for i, t in enumerate(texts):
        toks = tokens(t)
        grams = toks + [a + b" " + b for a, b in zip(toks, toks[1:])]
        for g in grams:
            h = cache.get(g)
            if h is None:
                h = cache[g] = crc32c_extend(seed, g) % buckets
            rows.append(i)
            cols.append(h)
    m = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), buckets))
    m.sum_duplicates()
    return m


class Lexical:
    """Fit on training counts: the kept columns and their idf (closed form from document
    frequencies). keep=None keeps every column (select "mod": the hash modulo the width); else
    the `keep` columns of highest df (ties: the lower column; select "df", model::LexicalView)."""

    def __init__(self, train_counts, keep=None, min_df=2):
        n = train_counts.shape[0]
        df = np.asarray((train_counts > 0).sum(axis=0)).ravel()
        if keep is None:
            self.columns = np.arange(train_counts.shape[1])
        else:
            order = np.argsort(-df, kind="stable")[:keep]
            self.columns = np.sort(order[df[order] >= min_df])  # column order: irrelevant to ridge
        df = df[self.columns]
        self.idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        self.idf[df < min_df] = 0.0

    def transform(self, counts, weight=1.0):
        m = counts[:, self.columns].astype(np.float64)
        m.data = 1.0 + np.log(m.data)
        m = m @ sp.diags(self.idf)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return (sp.diags(weight / norms) @ m).tocsr()


def one_hot(labels, classes):
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)))
    y[np.arange(len(labels)), [index[l] for l in labels]] = 1.0
    return y


def as_blocks(x):
    return x if isinstance(x, list) else [x]


def gram_and_cross(x, y):
    """G = X^T X and Q = X^T Y for X given as column blocks (dense or scipy sparse)."""
    blocks = as_blocks(x)
    gram = np.block([[dense(a.T @ b) for b in blocks] for a in blocks])
    cross = np.vstack([dense(a.T @ y) for a in blocks])
    return gram, cross


def dense(m):
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def scores(x, w):
    out, start = 0, 0
    for b in as_blocks(x):
        out = out + b @ w[start:start + b.shape[1]]
        start += b.shape[1]
    return np.asarray(out)


def solve(gram, cross, lam):
    g = gram.copy()
    g[np.diag_indices_from(g)] += lam
    return scipy.linalg.cho_solve(scipy.linalg.cho_factor(g), cross)


def accuracy(w, x, labels, classes):
    predicted = np.argmax(scores(x, w), axis=1)
    return float(np.mean([classes[p] == l for p, l in zip(predicted, labels)]))


def select_rows(x, mask):
    return [b[mask] for b in as_blocks(x)]


def hstack(*xs):
    return [b for x in xs for b in as_blocks(x)]


def expand(x, width, seed=14, bias_scale=0.05):
    """A seeded random ReLU expansion [x, relu(x P + b)] (distribution of model::ExpandStage's,
    not its exact draws: the accuracy, not the bits, is what this script compares)."""
    if width == 0:
        return x
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 1 / math.sqrt(x.shape[1]), (x.shape[1], width))
    b = rng.normal(0, bias_scale, width)
    return np.hstack([x, np.maximum(x @ p + b, 0)])


def evaluate(name, fit_x, fit_y, val_x, val_labels, train_x, train_y, test_x, test_labels,
             classes, lambdas):
    """Lambda on validation, then refit on all of train; returns (val acc, lambda, test acc)."""
    start = time.perf_counter()
    gram, cross = gram_and_cross(fit_x, fit_y)
    best = (-1, None)
    for lam in lambdas:  # one Cholesky per lambda, as the C++ bench's search
        acc = accuracy(solve(gram, cross, lam), val_x, val_labels, classes)
        if acc > best[0]:
            best = (acc, lam)
    w = solve(*gram_and_cross(train_x, train_y), best[1])
    test_acc = accuracy(w, test_x, test_labels, classes)
    d = sum(b.shape[1] for b in as_blocks(train_x))
    print(f"{name:44s} D {d:6d} (absorb {d * d / 2 / 1e6:6.2f} M MACs/sample)  lambda {best[1]:<6g} "
          f"validation {best[0]:.4f}  TEST {test_acc:.4f}  ({time.perf_counter() - start:.1f} s)",
          flush=True)
    return {"name": name, "features": d, "lambda": best[1], "validation_accuracy": best[0],
            "test_accuracy": test_acc}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--cache_dir", default=".tools/cache/text-task")
    ap.add_argument("--path", default="cpu")
    ap.add_argument("--buckets", default="2048,4096")
    ap.add_argument("--select", default="mod,df",
                    help="mod: hash mod N buckets; df: of 2^20 buckets the N of highest df")
    ap.add_argument("--weights", default="0.5,0.7,1")
    ap.add_argument("--lambdas", default="0.001,0.01,0.1,1,3,10")
    ap.add_argument("--short", action="store_true", help="use the short descriptions' cache too")
    ap.add_argument("--write_short", help="write DATA with each text cut to its short description")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.data, encoding="utf-8")]
    if args.write_short:
        with open(args.write_short, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(dict(r, text=r["text"].split(". ", 1)[0])) + "\n")
        return
    lambdas = [float(v) for v in args.lambdas.split(",")]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    is_val = np.array([crc32c_extend(0, r["source"].encode()) % 5 == 0 for r in train])
    classes = sorted({r["section"] for r in train})
    train_labels = [r["section"] for r in train]
    test_labels = [r["section"] for r in test]
    val_labels = [l for l, v in zip(train_labels, is_val) if v]
    train_y = one_hot(train_labels, classes)
    fit_y = train_y[~is_val]

    def run(name, train_x, test_x, fit_part_x=None):
        # fit_part_x: the fit part's features when they differ from train_x's rows (idf refit).
        fit_x = select_rows(train_x, ~is_val) if fit_part_x is None else fit_part_x[0]
        val_x = select_rows(train_x, is_val) if fit_part_x is None else fit_part_x[1]
        return evaluate(name, fit_x, fit_y, val_x, val_labels, train_x, train_y, test_x,
                        test_labels, classes, lambdas)

    emb_train = load_embeddings(args.cache_dir, [r["text"] for r in train], args.path)
    emb_test = load_embeddings(args.cache_dir, [r["text"] for r in test], args.path)
    views = {"emb": (emb_train, emb_test)}
    if args.short:
        short = lambda rs: [r["text"].split(". ", 1)[0] for r in rs]
        views["emb+short"] = (
            hstack(emb_train, load_embeddings(args.cache_dir, short(train), args.path)),
            hstack(emb_test, load_embeddings(args.cache_dir, short(test), args.path)))
    results = []
    for name, (a, b) in views.items():
        results.append(run(name, a, b))
    results.append(run("emb + expand 2048", expand(emb_train, 2048), expand(emb_test, 2048)))

    train_texts = [r["text"] for r in train]
    test_texts = [r["text"] for r in test]
    big = (hashed_counts(train_texts, 1 << 20), hashed_counts(test_texts, 1 << 20))
    for select, n in [(s, int(v)) for s in args.select.split(",") for v in args.buckets.split(",")]:
        if select == "mod":
            counts_train, counts_test = hashed_counts(train_texts, n), hashed_counts(test_texts, n)
            keep = None
        else:
            (counts_train, counts_test), keep = big, n
        # The view is fitted: the lambda search's model sees only the fit part's.
        lex_fit_part = Lexical(counts_train[~is_val], keep)
        lex_all = Lexical(counts_train, keep)
        lx = lambda lex, c, w: lex.transform(c, w)
        n = f"{select} {n}"
        results.append(run(f"lex {n}", lx(lex_all, counts_train, 1), lx(lex_all, counts_test, 1),
                           (lx(lex_fit_part, counts_train[~is_val], 1),
                            lx(lex_fit_part, counts_train[is_val], 1))))
        for name, (a, b) in views.items():
            for w in [float(v) for v in args.weights.split(",")]:
                results.append(run(
                    f"{name} + lex {n} (weight {w:g})",
                    hstack(a, lx(lex_all, counts_train, w)),
                    hstack(b, lx(lex_all, counts_test, w)),
                    (hstack(select_rows(a, ~is_val), lx(lex_fit_part, counts_train[~is_val], w)),
                     hstack(select_rows(a, is_val), lx(lex_fit_part, counts_train[is_val], w)))))
    # The weight is a hyper-parameter like lambda: per view and width, the one of best validation.
    print("chosen on validation (weight and lambda):")
    best = {}
    for r in results:
        key = r["name"].split(" (weight")[0]
        if key not in best or r["validation_accuracy"] > best[key]["validation_accuracy"]:
            best[key] = r
    for key, r in best.items():
        print(f"  {r['name']:44s} D {r['features']:6d}  validation {r['validation_accuracy']:.4f}  "
              f"TEST {r['test_accuracy']:.4f}")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
