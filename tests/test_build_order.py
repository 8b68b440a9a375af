"""scripts/build_book.py: a notebook that reads the others' records (chapter 16) executes
after them, in the build's own results folder, and again whenever one of them did."""

from __future__ import annotations

import json

from build_book import main

WRITER = """---
jupytext:
  text_representation: {{extension: .md, format_name: myst}}
kernelspec: {{display_name: Python 3, language: python, name: python3}}
---

# writer

```{{code-cell}} ipython3
import time

from hpcai.results import record

time.sleep(1.5)  # long enough that a reader started beside it would look too early
record("tbo_{name}", {value}, "s")
```
"""

READER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
hpcai:
  runs_last: true
---

# reader

```{code-cell} ipython3
import json
import os

from hpcai.results import latest

seen = {k: latest(k)["value"] for k in ("tbo_a", "tbo_b")}  # a missing one raises
with open(os.environ["TBO_OUT"], "a") as out:
    out.write(json.dumps(seen) + "\\n")
```
"""


def test_reader_runs_after_the_writers_and_again_when_one_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("HPCAI_RESULTS_DIR", raising=False)
    monkeypatch.setenv("TBO_OUT", str(tmp_path / "seen.jsonl"))
    reader, a, b = tmp_path / "reader.md", tmp_path / "a.md", tmp_path / "b.md"
    reader.write_text(READER, encoding="utf-8")
    a.write_text(WRITER.format(name="a", value=1), encoding="utf-8")
    b.write_text(WRITER.format(name="b", value=2), encoding="utf-8")
    out = tmp_path / "out"
    args = ["--profile", "smoke", "--out", str(out), "--no-setup", "--jobs", "2"]
    # the reader comes first in the list, and two notebooks run at a time
    assert main(args, notebooks=[reader, a, b]) == 0
    records = out / "_build" / "results" / "tbo.json"
    assert sorted(r["value"] for r in json.loads(records.read_text())) == [1, 2]
    a.write_text(WRITER.format(name="a", value=3), encoding="utf-8")
    assert main(args, notebooks=[reader, a, b]) == 0  # b cached, a and the reader again
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert seen == [{"tbo_a": 1, "tbo_b": 2}, {"tbo_a": 3, "tbo_b": 2}]
