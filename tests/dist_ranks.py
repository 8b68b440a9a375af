"""A program for tests/test_dist.py, run under torchrun: exercises hpcai.dist on every rank.

Every rank sends a row labelled with its rank to both ring neighbours, reduces a few numbers,
and rank 0 prints one JSON line with what each rank saw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hpcai import dist as hd  # noqa: E402


def main() -> None:
    w = hd.init("gloo")
    left, right = (w.rank - 1) % w.size, (w.rank + 1) % w.size
    mine = torch.full((5,), float(w.rank), device=w.device)
    from_left = torch.empty(5, device=w.device)
    from_right = torch.empty(5, device=w.device)
    hd.exchange([(mine, left), (mine, right)], [(from_left, left), (from_right, right)])
    hd.exchange([(torch.empty(0), right)], [(torch.empty(0), left)])  # empty: skipped
    report = {"rank": w.rank, "from_left": from_left.tolist(),
              "from_right": from_right.tolist(),
              "slowest": hd.slowest(0.5 + w.rank),
              "sums": hd.reduce_floats([1.0, float(w.rank)], "sum"),
              "mins": hd.reduce_floats([float(w.rank)], "min")}
    placement = hd.placement()
    gathered: list = [None] * w.size
    torch.distributed.all_gather_object(gathered, report)
    backend, size = w.backend, w.size
    hd.teardown()
    if w.rank == 0:
        print(json.dumps({"world": size, "backend": backend, "ranks": gathered,
                          "placement": placement}), flush=True)


if __name__ == "__main__":
    main()
