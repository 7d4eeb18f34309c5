#!/usr/bin/env python3
"""Extract the training corpus: Jane Austen's six novels from Debian's `r-cran-janeaustenr`.

The Debian package (version 1.0.0-1, MIT licence; the novels themselves are public domain, from
Project Gutenberg) stores each novel as an R character vector (one element per line of the
Gutenberg text) in a lazy-load database (`data/Rdata.rdx` + `data/Rdata.rdb`). This script reads
it with the `rdata` package (pip), reflows the hard-wrapped lines into paragraphs, drops headings
(title pages, "CHAPTER I", ...) and Gutenberg's `_italic_` underscores, and writes

    OUT/train.txt   paragraphs of every novel, "\n\n" between paragraphs, "\n\n\n" between novels
    OUT/valid.txt   the held-out paragraphs (one block of 20 paragraphs in 25, about 4%)

Usage (here, no accelerator needed):

    apt-get download r-cran-janeaustenr         # r-cran-janeaustenr_1.0.0-1_all.deb
    dpkg -x r-cran-janeaustenr_1.0.0-1_all.deb /tmp/janeaustenr
    pip install rdata==1.1.0
    python3 tools/train/extract_corpus.py /tmp/janeaustenr .train/corpus
"""

import gzip
import re
import sys
import zlib
from pathlib import Path

import rdata

NOVELS = [
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
]
DATA = "usr/lib/R/site-library/janeaustenr/data"
# Validation: the middle block of every VALID_EVERY blocks of BLOCK paragraphs.
BLOCK = 20
VALID_EVERY = 25
HEADING = re.compile(
    r"^(CHAPTER|Chapter|VOLUME|Volume|ADVERTISEMENT|BIOGRAPHICAL|THE END|FINIS)\b"
    r"|^[IVXLC]+\.?$|^\(?\d+\)?$"
)


def r_object(blob: bytes):
    """One serialized R object of an R lazy-load database or index."""
    return rdata.conversion.convert(rdata.parser.parse_data(blob))


def novels(root: Path) -> dict[str, list[str]]:
    """The lines of each novel, as the R package stores them."""
    data = root / DATA
    index = r_object(gzip.decompress((data / "Rdata.rdx").read_bytes()))
    if not index["compressed"][0]:
        raise SystemExit("Rdata.rdb is not zlib-compressed: unexpected package layout")
    rdb = (data / "Rdata.rdb").read_bytes()
    out = {}
    for name in NOVELS:
        offset, length = (int(v) for v in index["variables"][name])
        # Each entry: 4-byte big-endian uncompressed length, then a zlib stream.
        lines = r_object(zlib.decompress(rdb[offset + 4 : offset + length]))
        out[name] = [str(line) for line in lines]
    return out


def paragraphs(lines: list[str]) -> list[str]:
    """Reflowed paragraphs; headings and title pages dropped."""
    paras, cur = [], []
    for line in lines + [""]:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    kept = []
    for p in paras:
        p = re.sub(r"\s+", " ", p.replace("_", "")).strip()
        if HEADING.match(p):
            continue
        letters = [c for c in p if c.isalpha()]
        # Title-page lines: short and all capitals ("PRIDE AND PREJUDICE", "By Jane Austen").
        if letters and (all(c.isupper() for c in letters) or len(p) < 40 and "Austen" in p):
            continue
        if len(p) < 3:
            continue
        kept.append(p)
    return kept


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    train, valid = [], []
    for name, lines in novels(root).items():
        paras = paragraphs(lines)
        t, v = [], []
        for i, p in enumerate(paras):
            (v if (i // BLOCK) % VALID_EVERY == VALID_EVERY // 2 else t).append(p)
        train.append("\n\n".join(t))
        valid.append("\n\n".join(v))
        print(f"{name}: {len(paras)} paragraphs, {sum(map(len, paras))} characters")
    (out / "train.txt").write_text("\n\n\n".join(train) + "\n", encoding="utf-8")
    (out / "valid.txt").write_text("\n\n\n".join(valid) + "\n", encoding="utf-8")
    print(f"train {sum(map(len, train))} chars, valid {sum(map(len, valid))} chars -> {out}")


if __name__ == "__main__":
    main()
