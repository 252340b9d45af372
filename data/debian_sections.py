#!/usr/bin/env python3
"""The text task's data set: Debian 12 package descriptions labelled by their Section.

  debian_sections.py OUT.jsonl [--lists DIR] [--mirror URL] [--keep K] [--min_section N]
                     [--from_dpkg_status]

Source (docs/text-task.md): the `bookworm` suite's `main` component for amd64, fetched by
`apt-get update` into a project-local lists folder (default .tools/debian-lists; the system's apt
state is not touched) with English translations on, because Debian's Packages files carry only
the short description: the long one is in i18n/Translation-en, joined by Description-md5. Only
`bookworm` itself, not -updates or -security: those change weekly and add packages (new kernel
ABIs), while `bookworm` changes only at a point release, so the same point release (printed, from
the InRelease file) gives the same file byte for byte. contrib and non-free are left out: they
are not in a default Debian 12 apt source, are 1.5 % of the packages, and their sections
("contrib/games") would need merging by hand.

Each line of OUT is a JSON object, sorted by package name:
  {"package", "source", "section", "split": "train" | "test", "text"}
  text    short description, ". ", then the long description's paragraphs, whitespace collapsed
          (" ." paragraph separators and verbatim indentation become single spaces).
  split   "test" when sha256(source package name) mod 5 == 0, else "train": about 20 % test,
          and every binary package of one source (foo, foo-doc, libfoo-dev, which often share
          most of their description) on the same side, so the test set has no near-copies of
          training texts. The source name is the Source field without its version, else the
          package name.
Rules:
  --min_section  a section with fewer than N packages in the whole component (default 100, before
                 --keep, so every --keep has the same classes) is dropped (printed): 8 sections,
                 285 packages of bookworm main (education, embedded, gnustep, kernel, news,
                 shells, xfce, zope). Merging them into one "other" class would make a class
                 with no common topic; merging each into a neighbour would be a judgement per
                 section.
  --keep K       keep only sources with (sha256(source) div 5) mod K == 0 (independent of the
                 split's mod 5); K = 1 keeps all. The bench's default is 8 (about 7,900
                 packages): encoding all 63,000 long descriptions takes about an hour per
                 encoder path on the 2-core machine.
Prints the class counts, the package count and the file's sha256, which the bench records so a
rerun can be compared.

--from_dpkg_status reads /var/lib/dpkg/status instead (the installed packages: offline, small;
for the ctest proof, never the bench).
"""
import argparse
import collections
import hashlib
import json
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def fetch_lists(lists, mirror):
    """apt-get update of bookworm main (amd64, Translation-en) into `lists`, once."""
    if os.path.isdir(lists) and any(n.endswith("_InRelease") for n in os.listdir(lists)):
        return
    os.makedirs(os.path.join(lists, "partial"), exist_ok=True)
    sources = os.path.join(lists, "sources.list")
    with open(sources, "w") as f:
        f.write(f"deb [arch=amd64] {mirror} bookworm main\n")
    subprocess.run(["apt-get", "update", "-qq",
                    "-o", f"Dir::State::Lists={os.path.abspath(lists)}",
                    "-o", f"Dir::Etc::SourceList={os.path.abspath(sources)}",
                    "-o", "Dir::Etc::SourceParts=/nonexistent",
                    "-o", "Acquire::Languages=en",
                    "-o", "APT::Architectures=amd64",
                    # a snapshot.debian.org mirror's Release is past its Valid-Until
                    "-o", "Acquire::Check-Valid-Until=false"], check=True)


def list_file(lists, suffix):
    names = [n for n in sorted(os.listdir(lists)) if re.search(suffix, n)]
    if len(names) != 1:
        sys.exit(f"debian_sections: expected one {suffix} in {lists}, found {names}")
    return os.path.join(lists, names[0])


def cat(path):
    """A list file's text, decompressed by apt's own helper (lz4, gz, xz: whatever apt stored)."""
    return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True,
                          capture_output=True).stdout.decode("utf-8", "replace")


def stanzas(text):
    """Deb822 stanzas as {field: value}; continuation lines are kept (with their newlines)."""
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.split("\n"):
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            yield fields


def clean(description):
    """short + ". " + long paragraphs, whitespace collapsed."""
    short, _, body = description.partition("\n")
    lines = [line[1:] for line in body.split("\n") if line.startswith(" ")]
    long_text = " ".join("" if line.strip() == "." else line for line in lines)
    text = short.strip().rstrip(".")
    if long_text.strip():
        text += ". " + long_text
    return " ".join(text.split())


def packages_from_apt(lists):
    translations = {}
    for s in stanzas(cat(list_file(lists, r"_main_i18n_Translation-en"))):
        if "Description-en" in s:
            translations[(s["Package"], s.get("Description-md5"))] = s["Description-en"]
    release = {}
    for line in open(list_file(lists, r"_dists_bookworm_InRelease"), encoding="utf-8"):
        key, _, value = line.partition(":")
        if key in ("Version", "Date", "Codename"):
            release[key] = value.strip()
        if line.startswith("-----BEGIN PGP SIGNATURE") or key == "MD5Sum":
            break
    out = {}
    for s in stanzas(cat(list_file(lists, r"_main_binary-amd64_Packages"))):
        name = s.get("Package")
        if not name or name in out or "Section" not in s:
            continue
        description = translations.get((name, s.get("Description-md5")), s.get("Description", ""))
        out[name] = (s.get("Source", name).split(" ")[0], s["Section"], description)
    where = (f"Debian {release.get('Version', '?')} ({release.get('Codename', '?')}, "
             f"InRelease {release.get('Date', '?')}) main amd64")
    return out, where


def packages_from_dpkg():
    out = {}
    for s in stanzas(open("/var/lib/dpkg/status", encoding="utf-8", errors="replace").read()):
        name = s.get("Package")
        if name and "Section" in s and "Description" in s and name not in out:
            out[name] = (s.get("Source", name).split(" ")[0], s["Section"], s["Description"])
    return out, "dpkg status (installed packages)"


def digest_int(name):
    return int(hashlib.sha256(name.encode()).hexdigest(), 16)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--lists", default=os.path.join(ROOT, ".tools", "debian-lists"))
    parser.add_argument("--mirror", default=DEFAULT_MIRROR,
                        help="e.g. http://snapshot.debian.org/archive/debian/20250520T000000Z")
    parser.add_argument("--keep", type=int, default=1)
    parser.add_argument("--min_section", type=int, default=100)
    parser.add_argument("--from_dpkg_status", action="store_true")
    args = parser.parse_args()
    if args.from_dpkg_status:
        packages, where = packages_from_dpkg()
    else:
        fetch_lists(args.lists, args.mirror)
        packages, where = packages_from_apt(args.lists)
    rows = []
    for name in sorted(packages):
        source, section, description = packages[name]
        text = clean(description)
        if text:
            rows.append({"package": name, "source": source, "section": section.split("/")[-1],
                         "split": "test" if digest_int(source) % 5 == 0 else "train",
                         "text": text})
    counts = collections.Counter(r["section"] for r in rows)
    dropped = sorted(s for s, n in counts.items() if n < args.min_section)
    rows = [r for r in rows if r["section"] not in dropped and
            (digest_int(r["source"]) // 5) % args.keep == 0]
    counts = collections.Counter(r["section"] for r in rows)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    digest = hashlib.sha256(open(args.out, "rb").read()).hexdigest()
    splits = collections.Counter(r["split"] for r in rows)
    print(f"debian_sections: {where}; keep 1/{args.keep} of sources; "
          f"dropped sections with < {args.min_section} packages: "
          f"{', '.join(dropped) or 'none'}")
    print("debian_sections: classes (train/test): " + ", ".join(
        f"{s} {sum(1 for r in rows if r['section'] == s and r['split'] == 'train')}/"
        f"{sum(1 for r in rows if r['section'] == s and r['split'] == 'test')}"
        for s, _ in sorted(counts.items(), key=lambda kv: -kv[1])))
    print(f"debian_sections: {len(rows)} packages ({splits['train']} train, {splits['test']} test),"
          f" {len(counts)} classes, sha256 {digest}")


if __name__ == "__main__":
    main()
