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
