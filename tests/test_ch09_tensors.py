"""Chapter 9, tensors lab: hpcai.trace (the Chrome-trace parser, self times, the timeline,
the grad_fn walk) and the saved-tensor accounting against the formula from the shapes."""

from __future__ import annotations

import json

import matplotlib
import pytest

matplotlib.use("Agg")

torch = pytest.importorskip("torch")

from hpcai import trace  # noqa: E402
from hpcai.nn import torch_mlp  # noqa: E402


def _trace(tmp_path, events):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def _x(name, ts, dur, cat="cpu_op", tid=1):
    return {"ph": "X", "cat": cat, "name": name, "tid": tid, "ts": ts, "dur": dur}


SYNTHETIC = [
    _x("ProfilerStep#2", 1000.0, 100.0, "user_annotation"),
    _x("forward", 1001.0, 40.0, "user_annotation"),
    _x("aten::linear", 1002.0, 20.0),
    _x("aten::addmm", 1003.0, 15.0),
    _x("aten::relu", 1025.0, 5.0),
    _x("backward", 1050.0, 30.0, "user_annotation"),
    _x("aten::mm", 1051.0, 9.0),
    _x("aten::mm", 1061.0, 11.0),
    _x("aten::mm", 1065.0, 3.0, tid=2),                   # autograd's own thread
    _x("optimizer", 1085.0, 10.0, "user_annotation"),
    _x("aten::add_", 1086.0, 4.0),
    {"ph": "M", "name": "thread_name", "tid": 1},
    _x("gemm_kernel", 0.0, 1.0, "kernel", tid=7),
]


def test_trace_events_depth_phase_and_self_times(tmp_path):
    ev = trace.trace_events(_trace(tmp_path, SYNTHETIC))
    assert len(ev) == 11                                  # kernels and metadata dropped
    by = {(e["name"], e["ts"]): e for e in ev}
    assert by["ProfilerStep#2", 0.0]["depth"] == 0
    assert by["forward", 1.0]["depth"] == 1 and by["forward", 1.0]["phase"] == "forward"
    assert by["aten::addmm", 3.0]["depth"] == 3
    assert by["aten::addmm", 3.0]["phase"] == "forward"
    assert by["aten::mm", 61.0]["phase"] == "backward"
    assert by["aten::add_", 86.0]["phase"] == "optimizer"
    assert [by[k]["level"] for k in (("ProfilerStep#2", 0.0), ("forward", 1.0),
                                     ("aten::linear", 2.0), ("aten::addmm", 3.0))] \
        == [None, 0, 1, 2]
    other = next(e for e in ev if e["tid"] == "2")
    assert other["phase"] == "backward" and other["depth"] == 0 and other["level"] == 1
    rows = {r["name"]: r for r in trace.self_times(ev)}
    assert set(rows) == {"aten::linear", "aten::addmm", "aten::relu", "aten::mm",
                         "aten::add_"}                    # operators only, not labels
    assert rows["aten::linear"]["self_us"] == 5.0         # 20 less the addmm inside
    assert rows["aten::linear"]["total_us"] == 20.0
    assert rows["aten::mm"] == {"name": "aten::mm", "calls": 3, "self_us": 23.0,
                                "total_us": 23.0}
    assert trace.self_times(ev)[0]["name"] == "aten::mm"  # largest self time first
    assert trace.phase_spans(ev) == {"forward": [40.0], "backward": [30.0],
                                     "optimizer": [10.0]}


def test_draw_timeline_has_a_row_per_phase(tmp_path):
    import matplotlib.pyplot as plt

    ev = trace.trace_events(_trace(tmp_path, SYNTHETIC))
    fig, ax = plt.subplots()
    trace.draw_timeline(ax, ev, label_us=10.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["step", *trace.PHASES]
    assert len(ax.collections) == 1 + 7                   # the steps, then each operator
    assert any(t.get_text() == "linear" for t in ax.texts)
    plt.close(fig)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real trace: two steps of a tiny MLP, recorded after one warm-up step."""
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    torch.manual_seed(0)
    model = torch_mlp([8, 16, 16, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(5, 8), torch.randint(0, 4, (5,))
    with profile(activities=[ProfilerActivity.CPU],
                 schedule=schedule(wait=0, warmup=1, active=2, repeat=1)) as prof:
        for _ in range(3):
            with record_function("forward"):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            with record_function("backward"):
                loss.backward()
            with record_function("optimizer"):
                opt.step()
                opt.zero_grad()
            prof.step()
    path = tmp_path_factory.mktemp("trace") / "step.json"
    prof.export_chrome_trace(str(path))
    return trace.trace_events(path), {a.key: a.count for a in prof.key_averages()}


def test_a_recorded_step_has_its_three_phases(recorded):
    ev, counts = recorded
    spans = trace.phase_spans(ev)
    assert all(len(spans[p]) == 2 for p in trace.PHASES)
    phases = {e["phase"] for e in ev if e["name"].startswith("aten::")}
    assert set(trace.PHASES) <= phases
    assert all(e["ts"] >= 0 and e["dur"] >= 0 for e in ev)
    rows = {r["name"]: r for r in trace.self_times(ev)}
    assert rows["aten::addmm"]["calls"] == 3 * 2 == counts["aten::addmm"]
    assert rows["aten::mm"]["calls"] == counts["aten::mm"]
    steps = sum(e["dur"] for e in ev if e["name"].startswith("ProfilerStep"))
    assert 0 < sum(r["self_us"] for r in rows.values()) <= steps + 1.0


def test_grad_chain_of_an_mlp():
    torch.manual_seed(0)
    model = torch_mlp([6, 5, 5, 3])
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 6)),
                                             torch.tensor([0, 1, 2, 0]))
    nodes = trace.grad_chain(loss.grad_fn)
    names = [n for _, n in nodes]
    assert nodes[0] == (0, "NllLossBackward0") and nodes[1] == (1, "LogSoftmaxBackward0")
    assert names.count("AccumulateGrad") == 6             # a weight and a bias per layer
    assert names.count("AddmmBackward0") == 3 and names.count("ReluBackward0") == 2


@pytest.mark.parametrize("batch,width,depth", [(1, 3, 1), (7, 16, 2), (32, 64, 3)])
def test_saved_bytes_match_the_formula_and_are_freed(batch, width, depth):
    torch.manual_seed(0)
    model = torch_mlp([10] + [width] * depth + [4])
    x, y = torch.randn(batch, 10), torch.randint(0, 4, (batch,))
    held = [x, y, *model.parameters()]
    with trace.SavedTensors() as saved:
        loss = torch.nn.functional.cross_entropy(model(x), y)
    formula = trace.mlp_graph_bytes(batch, width, depth, 4)
    assert saved.graph_bytes(held) == formula == saved.alive_bytes(held)
    # every save counted: input, 2 per ReLU output, weights 2.., log-softmax twice,
    # targets (int64) and the one-element normaliser
    per_save = 4 * (batch * 10 + 2 * depth * batch * width + width * width * (depth - 1)
                    + width * 4 + 2 * batch * 4 + 1) + 8 * batch
    assert saved.bytes == per_save and saved.count == 1 + 3 * depth + 4
    loss.backward()
    assert saved.alive_bytes(held) == 0
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()   # no hooks: same result
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_retained_graph_lives_until_the_loss_goes():
    torch.manual_seed(0)
    model = torch_mlp([10, 8, 4])
    x, y = torch.randn(3, 10), torch.randint(0, 4, (3,))
    held = [x, y, *model.parameters()]
    with trace.SavedTensors() as saved:
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward(retain_graph=True)
    assert saved.alive_bytes(held) == trace.mlp_graph_bytes(3, 8, 1, 4)
    del loss
    assert saved.alive_bytes(held) == 0
