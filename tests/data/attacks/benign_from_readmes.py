#!/usr/bin/env python3
"""Writes benign_prose.txt: the prose and Markdown lines (outside code blocks) of the README
files of crates.io packages this workspace depends on, as shipped in the packages. Real text
that talks about queries, selects, unions, paths, URLs, <types> and `code`.

Usage: benign_from_readmes.py CARGO_REGISTRY_SRC_DIR > benign_prose.txt
"""
import pathlib
import sys

CRATES = [
    "aho-corasick-1.1.5", "anyhow-1.0.102", "base64-0.23.1", "blake3-1.8.7", "brotli-9.1.1",
    "clap-4.6.1", "env_logger-0.11.12", "etherparse-0.21.0", "flate2-1.1.11", "heed-0.23.1",
    "httparse-1.10.1", "humantime-2.4.0", "indicatif-0.18.6", "ipnet-2.12.2", "log-0.4.34",
    "lru-0.19.1", "memchr-2.8.3", "nix-0.31.4", "pcap-parser-0.17.0", "postcard-1.2.0",
    "regex-1.13.2", "serde-1.0.228", "serde_json-1.0.150", "thiserror-2.0.18", "tokio-1.54.1",
]


def main():
    root = pathlib.Path(sys.argv[1])
    print("# point: text")
    print("# Prose and Markdown lines of crates.io packages' README.md files (see benign_from_readmes.py).")
    seen = set()
    for crate in CRATES:
        readme = root / crate / "README.md"
        if not readme.exists():
            continue
        fenced = False
        for line in readme.read_text(errors="replace").splitlines():
            if line.strip().startswith("```"):
                fenced = not fenced
                continue
            line = line.strip()
            if fenced or len(line) < 12 or len(line) > 400 or line in seen:
                continue
            seen.add(line)
            print(line)


main()
