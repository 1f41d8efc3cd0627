#!/usr/bin/python3
"""Reads Prometheus text exposition on stdin and checks it with prometheus_client's parser
(an exception, and exit 1, if it does not parse). With NAME [LABEL=VALUE ...], prints that
sample's value (0 if absent); otherwise prints how many samples it read."""
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
except Exception as e:  # the parser's own errors: not the exposition format
    print(f"prom_value: does not parse: {e}", file=sys.stderr)
    sys.exit(1)
if len(sys.argv) < 2:
    print(len(samples))
    sys.exit(0)
want = dict(a.split("=", 1) for a in sys.argv[2:])
for s in samples:
    if s.name == sys.argv[1] and all(s.labels.get(k) == v for k, v in want.items()):
        print(int(s.value) if float(s.value).is_integer() else s.value)
        sys.exit(0)
print(0)
