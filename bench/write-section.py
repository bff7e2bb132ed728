#!/usr/bin/env python3
"""Puts a benchmark section into docs/benchmarks.md.

    bench/write-section.py OUT SECTION_FILE HEADING_PREFIX

The section replaces the one whose heading starts with HEADING_PREFIX (up to
the next `## ` heading), or is appended when there is none.
"""
import re
import sys

out, section_file, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
section = open(section_file).read()
try:
    text = open(out).read()
except FileNotFoundError:
    text = "# Benchmarks\n\n"
pat = re.compile(re.escape(prefix) + r".*?(?=\n## |\Z)", re.S)
if pat.search(text):
    text = pat.sub(lambda m: section.rstrip() + "\n", text, count=1)
else:
    text = text.rstrip() + "\n\n" + section
open(out, "w").write(text)
