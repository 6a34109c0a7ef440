"""Throughput of a `pvlens screen` run that was stopped and resumed, summed from its progress log.

Usage: python benchmarks/screen_log_segments.py ~/.cache/pvlens/runs/sharegpt-10k.log

Each resumed run ("segment") prints a tqdm bar over the samples still pending. The last bar line of a
segment gives its samples, loop seconds and tokens/s; tokens = tokens/s x seconds. Reads both bar formats:
samples ("1408/7524 [32:20<...") and characters ("6.50M/18.4M [1:43:51<..., samples=3072/4964").
Needed for runs whose early records predate per-sample times in the results log.
"""

import re
import sys
from pathlib import Path

SAMPLES = re.compile(r"screen:.*?(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<.*tok_per_s=(\d+)")
CHARS = re.compile(r"screen:.*?\[(?:(\d+):)?(\d+):(\d+)<.*samples=(\d+)/(\d+), tok_per_s=(\d+)")


def segments(text: str) -> dict[int, tuple[int, int, int]]:
    """Pending samples at the segment's start -> (samples done, loop seconds, tokens/s) from its last bar line."""
    last = {}
    for line in text.replace("\r", "\n").splitlines():
        if c := CHARS.search(line):
            h, m, s, done, pending, rate = c.groups()
        elif c := SAMPLES.search(line):
            done, pending, h, m, s, rate = c.groups()
        else:
            continue
        last[int(pending)] = (int(done), int(h or 0) * 3600 + int(m) * 60 + int(s), int(rate))
    return last


def main(path: str) -> None:
    samples = seconds = tokens = 0
    log = Path(path).read_text(encoding="utf-8", errors="replace")
    for pending, (done, secs, rate) in sorted(segments(log).items(), reverse=True):
        print(f"segment from {pending} pending: {done} samples in {secs} s ({secs / 60:.1f} min), {rate} tok/s")
        samples, seconds, tokens = samples + done, seconds + secs, tokens + rate * secs
    print(f"all: {samples} samples in {seconds} s ({seconds / 3600:.2f} h), {tokens} tokens, "
          f"{tokens / seconds:.0f} tok/s")


if __name__ == "__main__":
    main(sys.argv[1])
