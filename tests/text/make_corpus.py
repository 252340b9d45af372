#!/usr/bin/env python3
"""Writes the text encoder's proof corpus: one JSON string per line, deterministic.

Real text: Debian package descriptions, picked by a hash of the package's name: short ones from
`apt-cache dumpavail` (tens of thousands of packages when the apt lists are there; it has no long
descriptions), long ones (paragraphs, lists, URLs) from dpkg's status file (the installed packages). Crafted text: fixed cases (punctuation, accents, scripts,
CJK, emoji, control characters, words over the 100-character limit, inputs over the 256-token limit,
empty) and random strings drawn with a fixed seed from many Unicode blocks.

  make_corpus.py OUT.jsonl [--short N] [--long N] [--random N] [--minimum N]
"""
import argparse
import hashlib
import json
import random
import subprocess
import sys


def apt_packages():
    try:
        return subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True,
                              check=False).stdout
    except FileNotFoundError:
        return ""


def dpkg_status():
    with open("/var/lib/dpkg/status", encoding="utf-8", errors="replace") as f:
        return f.read()


def debian_descriptions(text):
    """(package, short description, long description) of the stanzas in `text`, sorted by name."""
    packages = {}
    for stanza in text.split("\n\n"):
        name, short, long_lines, in_description = None, None, [], False
        for line in stanza.split("\n"):
            if line.startswith("Package: "):
                name = line[len("Package: "):].strip()
            elif line.startswith("Description: "):
                short, in_description = line[len("Description: "):], True
            elif in_description and line.startswith(" "):
                body = line[1:]
                long_lines.append("" if body == "." else body)
            else:
                in_description = False
        if name and short and name not in packages:
            packages[name] = (short, "\n".join(long_lines))
    return [(name, *packages[name]) for name in sorted(packages)]


def pick(name, modulus):
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % modulus == 0


CRAFTED = [
    "", " ", "\t\n\r ", "Hello, world!", "HELLO WORLD", "hello   world\t\ttabs\nnew line",
    "Don't stop-believing: it's (really) [very] {good}... right?!", "a--b__c..d,,e;;f::g",
    "$5+3=8 <a|b> ~`^ @home #tag 100% & more * / \\ \"quoted\" 'single'",
    "Crème brûlée à la façade — naïve café, résumé, jalapeño, Ångström, Øresund, Łódź",
    "Straße, groß, ẞ, Æsir, œuvre, ǅemal, ǈ, ǋ, ﬁnance, ﬂow, Ⅻ, ①②③, ¼ ½ ¾",
    "İstanbul, IŞIK, ıi, ΣΑΣ Οδυσσεύς, Ἀθῆναι, ᾀᾁᾂ, ΰ ΐ",
    "Москва — столица России. Ёжик в тумане. Їжак, Ґанок",
    "Ελληνικά κείμενα με τόνους: άέήίόύώ ΆΈΉΊΌΎΏ",
    "العربية: مرحبا بالعالم ١٢٣", "עברית: שלום עולם", "हिन्दी: नमस्ते दुनिया", "ภาษาไทย สวัสดีครับ",
    "中文：你好，世界！这是一个测试。", "日本語：こんにちは、世界。カタカナ ﾊﾝｶｸ", "한국어: 안녕하세요 세계",
    "混合 mixed 文本 text 123", "𠀀𠀁 𪜀 𫝀 𫠠 𬺰 丽 兀 鿿 㐀 䶿 〇 〡",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇩🇪🇫🇷 ❤️ ✨ 🥰 🫠 🧑‍💻",
    "Controls:\x00\x01\x02\x1b[31mred\x1b[0m\x7f\x80\x85\x9f end",
    "Zero\u200bwidth\u200cjoin\u200dhere\ufeffBOM\u2060word \u00adsoft\u00adhyphen",
    "Replacement \ufffd char, private \ue000\uf8ff, unassigned \u0378\u0379, tag \U000e0041",
    "Spaces:\u00a0nbsp\u2002en\u2003em\u2009thin\u3000ideographic\u2028line\u2029para\u1680ogham",
    "Combining: e\u0301 a\u0308 o\u0302\u0323 n\u0303 \u0301alone Z\u0351\u0325\u0360a\u0489",
    "Fullwidth: Ｈｅｌｌｏ，ｗｏｒｌｄ！ １２３ ＡＢＣ",
    "Math: ∀x∈ℝ, ∃y: x² + y² ≤ 1 ⇒ √(x·y) ≈ π/4 ∑ ∫ ∂ ∞",
    "Quotes: «guillemets» „German“ “curly” ‘single’ ‹one› 「Japanese」 『double』 【lenticular】",
    "Dashes: - – — ― ‐ ‑ ‒ ⁓ ~ ‿ ⁀ ⸺ ⸻ ⹀ ⹁ ⹂ ⹃ ⹋ ⹏",
    "URL https://www.debian.org/doc/FAQ/ch-pkgtools.en.html?x=1&y=2#top email a.b@c.org",
    "Code: int main(void) { return x->y[0] == 1 ? a : b; } // done",
    "Numbers 3.14159 1,000,000 1e-9 0x7fff 2024-05-17 12:30:45 v1.2.3-rc.4",
    "a" * 99, "b" * 100, "c" * 101, "supercalifragilistic" * 6, "x" * 500,
    "unbelievably-uncharacteristically-antidisestablishmentarianism-pneumonoultramicroscopic",
    " ".join(["word"] * 300), " ".join(f"token{i}" for i in range(400)),
    "The quick brown fox jumps over the lazy dog. " * 40,
    "Ǆ ǅ ǆ Ǳ ǲ ǳ ẞ ß ſ ﬀ ﬃ ŉ ǰ ΐ և ẖ ẘ ẙ ẚ",
    "Cherokee ᏣᎳᎩ ꭰꭱ, Georgian ႠႡ ა, Armenian Աա, Glagolitic Ⰰⰰ, Deseret 𐐀𐐨",
    "Kelvin \u212a Ohm \u2126 Angstrom \u212b ﬅ ﬆ",
    "Dotted \u0130 and dotless \u0131, final sigma ΟΔΟΣ, capital ΣΊΣΥΦΟΣ",
]

# Code point ranges the random strings draw from (scripts, symbols, marks, controls, emoji, CJK
# and its extensions, private use, and planes with unassigned code points).
RANGES = [
    (0x20, 0x7E, 30), (0x00, 0x1F, 2), (0x7F, 0x9F, 1), (0xA0, 0x24F, 6), (0x250, 0x2FF, 1),
    (0x300, 0x36F, 3), (0x370, 0x3FF, 3), (0x400, 0x4FF, 3), (0x530, 0x58F, 1), (0x590, 0x6FF, 2),
    (0x900, 0x97F, 1), (0xE00, 0xE7F, 1), (0x10A0, 0x10FF, 1), (0x1100, 0x11FF, 1),
    (0x1E00, 0x1FFF, 3), (0x2000, 0x206F, 3), (0x2070, 0x2BFF, 3), (0x2E00, 0x2E7F, 2),
    (0x3000, 0x30FF, 3), (0x3400, 0x4DBF, 1), (0x4E00, 0x9FFF, 5), (0xAC00, 0xD7A3, 2),
    (0xE000, 0xF8FF, 1), (0xF900, 0xFAFF, 1), (0xFB00, 0xFFFF, 2), (0x10000, 0x1FFFF, 3),
    (0x1F300, 0x1FAFF, 5), (0x20000, 0x2FA1F, 2), (0xE0000, 0xE01EF, 1),
]


def random_text(rng):
    weights = [w for _, _, w in RANGES]
    pieces = []
    for _ in range(rng.randint(1, 40)):
        if rng.random() < 0.3:
            pieces.append(rng.choice([" ", " ", "  ", "\n", "\t", ". ", ", "]))
            continue
        lo, hi, _ = rng.choices(RANGES, weights)[0]
        word = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 12)))
        pieces.append(word)
    # No lone surrogates: they are not valid UTF-8, so no client could send them.
    return "".join(pieces).encode("utf-8", "replace").decode("utf-8")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--short", type=int, default=1400, help="about this many short descriptions")
    parser.add_argument("--long", type=int, default=60, help="at most this many long ones")
    parser.add_argument("--random", type=int, default=500)
    parser.add_argument("--minimum", type=int, default=2000)
    args = parser.parse_args()
    available = debian_descriptions(apt_packages())
    installed = debian_descriptions(dpkg_status())
    if len(available) < args.short:
        available = installed
    modulus = max(1, len(available) // max(1, args.short))
    texts = [short for name, short, _ in available if pick(name, modulus)][:args.short]
    texts += [long for name, _, long in installed if long and pick(name, 2)][:args.long]
    packages = available
    texts.extend(CRAFTED)
    rng = random.Random(14)
    # Without apt lists (dpkg's status has only the installed packages) random texts make up the
    # difference, so the corpus always has at least --minimum texts.
    count = max(args.random, args.minimum - len(texts))
    texts.extend(random_text(rng) for _ in range(count))
    with open(args.out, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps(text, ensure_ascii=True) + "\n")
    print(f"make_corpus: {len(texts)} texts ({len(packages)} Debian packages to pick from)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
