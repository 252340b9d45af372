#!/usr/bin/env python3
"""Writes the text bench's sentences: Debian package short descriptions (the text task's real length
distribution), picked by a hash of the package name so every run and machine with the same apt
lists gets the same sample. One JSON string per line.

  text_bench_data.py OUT.jsonl [--count 2048]
"""
import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "text"))
from make_corpus import apt_packages, debian_descriptions, dpkg_status  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=2048)
    args = parser.parse_args()
    packages = debian_descriptions(apt_packages()) or debian_descriptions(dpkg_status())
    ranked = sorted(packages, key=lambda p: hashlib.sha1(p[0].encode()).hexdigest())
    with open(args.out, "w", encoding="utf-8") as f:
        for _, short, _ in ranked[:args.count]:
            f.write(json.dumps(short) + "\n")
    print(f"text_bench_data: {min(args.count, len(ranked))} short descriptions of "
          f"{len(packages)} packages", file=sys.stderr)


if __name__ == "__main__":
    main()
