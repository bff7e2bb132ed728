#!/usr/bin/env python3
"""Records a compile trace: for each C file, the preprocessed size and the
CPU time (user + sys) of `gcc -O2 -c` on it. CPU time rather than wall time,
so a busy machine does not distort the figures much.

Usage: record_trace.py SRC_DIR > trace.csv
"""
import os, resource, subprocess, sys, tempfile

root = sys.argv[1]
files = sorted(
    os.path.join(d, f)
    for d, _, fs in os.walk(root)
    for f in fs
    if f.endswith(".c")
)
print("file,preprocessed_bytes,compile_ms")
with tempfile.TemporaryDirectory() as tmp:
    for path in files:
        inc = ["-I", os.path.dirname(path), "-I", root, "-I", os.path.join(root, "common")]
        pre = subprocess.run(["gcc", "-E", *inc, path], capture_output=True)
        if pre.returncode != 0:
            continue
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(["gcc", "-O2", "-c", *inc, path, "-o", os.path.join(tmp, "x.o")],
                           capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            continue
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"{os.path.relpath(path, root)},{len(pre.stdout)},{round(cpu * 1000)}")
