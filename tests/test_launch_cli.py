import json
import subprocess
import sys
import textwrap

import pytest

from hpcai.launch import LauncherError, find_executable, parse_json_tail, run_json, run_script

BENCH = textwrap.dedent('''
    from hpcai.cli import bench_main
    SIZES = {"smoke": {"n": 3, "scale": 0.5}, "cpu": {"n": 30, "scale": 1.0}}
    def run(S):
        return {"total": S.n * S.scale}
    if __name__ == "__main__":
        bench_main(run, SIZES, description="toy")
''')


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(BENCH)
    return path


def test_bench_main_json_contract(toy):
    out = run_script(toy, profile="smoke", args=["--n", "4"])
    assert out["total"] == 2.0
    assert out["profile"] == "smoke" and out["settings"]["n"] == 4
    assert out["bench"] == "toy" and "cpu" in out["machine"]


def test_bench_main_bad_profile_fails_fast(toy):
    proc = subprocess.run([sys.executable, str(toy), "--profile", "huge", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown profile 'huge'" in proc.stderr and "smoke, cpu, gpu, cluster" in proc.stderr


CHECKED = textwrap.dedent('''
    import sys
    from hpcai.cli import bench_main
    SIZES = {"smoke": {"n": 3, "scale": 0.5, "lo": 0, "sizes": [1, 2], "algo": "ring",
                       "dtypes": ["float32"], "weak": False},
             "cpu": {"n": 30, "scale": 1.0, "lo": -1, "sizes": [3], "algo": "ring",
                     "dtypes": ["float32"], "weak": False}}
    def check(S):
        if S.n > 100:
            raise ValueError(f"--n must be at most 100, got {S.n}")
    def run(S):
        print("WORK STARTED", file=sys.stderr)
        return {"total": S.n * S.scale}
    if __name__ == "__main__":
        bench_main(run, SIZES, check=check,
                   choices={"algo": ("ring", "tree"), "dtypes": ("float32", "float64")})
''')


@pytest.mark.parametrize("args, words", [
    (["--n", "-3"], ["--n", "positive integer", "-3"]),
    (["--n", "0"], ["--n", "positive integer"]),
    (["--n", "abc"], ["--n", "integer", "'abc'"]),
    (["--n", "2.5"], ["--n", "integer"]),
    (["--scale", "0"], ["--scale", "positive number"]),
    (["--scale", "x"], ["--scale", "number"]),
    (["--lo", "-2"], ["--lo", ">= -1"]),
    (["--sizes", "4,0"], ["--sizes", "positive integers"]),
    (["--sizes", "a,b"], ["--sizes", "integers"]),
    (["--algo", "star"], ["--algo", "ring, tree", "star"]),
    (["--dtypes", "float32,int8"], ["--dtypes", "float32, float64", "int8"]),
    (["--weak", "maybe"], ["--weak", "true or false"]),
    (["--n", "101"], ["--n", "at most 100"]),
    (["--nn", "3"], ["unrecognized", "--nn"]),
    (["--n"], ["--n", "expected one argument"]),
])
def test_bench_main_bad_values_give_one_error_line(tmp_path, args, words):
    path = tmp_path / "checked.py"
    path.write_text(CHECKED)
    proc = subprocess.run([sys.executable, str(path), "--profile", "smoke", "--json", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert proc.stdout == ""


def test_bench_main_allows_what_the_table_allows(tmp_path):
    path = tmp_path / "checked.py"
    path.write_text(CHECKED)
    out = run_script(path, profile="smoke", args=["--lo", "-1", "--algo", "tree",
                                                  "--dtypes", "float64,float32", "--n", "100"])
    assert out["settings"]["lo"] == -1 and out["settings"]["dtypes"] == ["float64", "float32"]
    assert out["total"] == 50.0


def test_validate_and_lower_bounds():
    from hpcai.cli import lower_bounds, validate

    table = {"smoke": {"n": 0, "x": 2.0, "k": [1, 2]}, "cpu": {"n": 5, "x": 1.0, "k": [3]}}
    assert lower_bounds(table) == {"n": 0, "x": None, "k": None}
    validate(table, {"n": 0, "x": 0.5, "k": [1], "other": None})
    with pytest.raises(ValueError, match="--n must be an integer >= 0, got -1"):
        validate({"a": {"n": 0}}, {"n": -1})
    with pytest.raises(ValueError, match="--x must be a positive number"):
        validate(table, {"x": 0.0})


def test_run_script_rejects_unknown_profile_before_launching(toy):
    from hpcai import ProfileError

    with pytest.raises(ProfileError):
        run_script(toy, profile="huge")


def test_parse_json_tail_takes_the_last_object():
    assert parse_json_tail('noise\n{"a": 1}\n{"b": 2}\n') == {"b": 2}
    with pytest.raises(LauncherError, match="no JSON"):
        parse_json_tail("nothing here")


def test_failures_and_missing_launchers_are_clear():
    with pytest.raises(LauncherError, match="exited with 3"):
        run_json([sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(LauncherError, match="not found"):
        find_executable("no-such-launcher-xyz")


def test_mpiexec_and_torchrun_launch_for_real(tmp_path):
    from hpcai.launch import mpiexec, torchrun

    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent('''
        import json, os, sys
        rank = int(os.environ.get("RANK", os.environ.get("PMI_RANK", "0")))
        size = int(os.environ.get("WORLD_SIZE", os.environ.get("PMI_SIZE", "1")))
        if rank == 0:
            print(json.dumps({"size": size, "argv": sys.argv[1:]}))
    '''))
    assert mpiexec(script, 2, profile="smoke")["size"] == 2
    out = torchrun(script, 2, profile="smoke")
    assert out["size"] == 2 and out["argv"][:3] == ["--json", "--profile", "smoke"]
    assert json.dumps(out)
