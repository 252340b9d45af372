#!/usr/bin/env python3
"""The text task's baseline: TF-IDF + a linear classifier (scikit-learn from Debian,
python3-sklearn) on the same split as strata-bench-text-task (docs/text-task.md).

  text_task_tfidf.py DATA.jsonl

Features: TfidfVectorizer on word unigrams and bigrams (sublinear tf, min_df 2, lower-cased),
fit on the training texts only. Classifier: LinearSVC (one-vs-rest, squared hinge), its C chosen
from a grid on the same validation part of train as the encoder's head (sources with
crc32c(source) % 5 == 0; the test side is never looked at), then refit on all of train. Prints
test accuracy, fit time (vectoriser + classifier on all of train) and joules per sentence at
prediction: the sparse products' multiply-adds priced as fp64 MACs with the host table of
fpga/energy.h (18.4 pJ; scikit-learn computes in float64), a lower bound like the encoder's.
The last line is a JSON summary for bench/text_task_bench.sh.
"""
import json
import sys
import time
import zlib

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

FP64_MAC_PJ = 18.4  # fpga/energy.h, HostEnergyTable().fp64_mac_pj
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


def crc32c(data):
    """CRC-32C (Castagnoli), as base/crc32c.h: the validation part must match the C++ bench's."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def fit(texts, labels, c):
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    model = LinearSVC(C=c).fit(vectorizer.fit_transform(texts), labels)
    return vectorizer, model


def accuracy(vectorizer, model, texts, labels):
    predicted = model.predict(vectorizer.transform(texts))
    return sum(p == y for p, y in zip(predicted, labels)) / max(1, len(labels))


def main():
    rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    validation = [r for r in train if crc32c(r["source"].encode()) % 5 == 0]
    fit_part = [r for r in train if crc32c(r["source"].encode()) % 5 != 0]
    scores = {}
    for c in C_GRID:
        v, m = fit([r["text"] for r in fit_part], [r["section"] for r in fit_part], c)
        scores[c] = accuracy(v, m, [r["text"] for r in validation],
                             [r["section"] for r in validation])
    best_c = max(C_GRID, key=lambda c: (scores[c], -c))
    start = time.perf_counter()
    vectorizer, model = fit([r["text"] for r in train], [r["section"] for r in train], best_c)
    fit_seconds = time.perf_counter() - start
    test_x = vectorizer.transform([r["text"] for r in test])
    test_accuracy = accuracy(vectorizer, model, [r["text"] for r in test],
                             [r["section"] for r in test])
    # Per test sentence: one multiply-add per non-zero feature per class for the scores.
    macs = test_x.nnz * len(model.classes_) / max(1, len(test))
    joules = macs * FP64_MAC_PJ * 1e-12
    print(f"tfidf+LinearSVC: {len(vectorizer.vocabulary_)} features (word 1-2 grams), "
          f"{len(model.classes_)} classes, C {best_c} (validation {scores[best_c]:.4f}), "
          f"TEST ACCURACY {test_accuracy:.4f}, fit {fit_seconds:.2f} s on {len(train)} texts, "
          f"predict {joules * 1e3:.6f} mJ/sentence ({macs:.0f} fp64 MACs)")
    print("JSON " + json.dumps({"path": "tfidf+LinearSVC", "test_accuracy": test_accuracy,
                                "validation_accuracy": scores[best_c], "c": best_c,
                                "fit_seconds": fit_seconds, "predict_j_per_sentence": joules,
                                "features": len(vectorizer.vocabulary_)}))


if __name__ == "__main__":
    main()
