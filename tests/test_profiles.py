import pytest

import hpcai.profiles as profiles
from hpcai import ProfileError, resolve

TABLE = {"smoke": {"n": 10, "repeats": 3}, "cpu": {"n": 1000, "repeats": 7}}


def test_rows_are_picked_by_profile():
    assert resolve("smoke", TABLE).n == 10
    assert resolve("cpu", TABLE).n == 1000
    assert resolve("cpu", TABLE).profile == "cpu"


def test_none_override_means_from_profile_and_values_override():
    S = resolve("smoke", TABLE, n=None, repeats=99)
    assert (S.n, S.repeats) == (10, 99)
    assert S.as_dict() == {"profile": "smoke", "n": 10, "repeats": 99}


def test_larger_profiles_inherit_smaller_rows(monkeypatch):
    monkeypatch.setattr(profiles, "has_cuda", lambda: True)
    monkeypatch.setattr(profiles, "has_slurm", lambda: True)
    assert resolve("gpu", TABLE).n == 1000
    assert resolve("cluster", {**TABLE, "gpu": {"n": 5}}).n == 5


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(ProfileError) as err:
        resolve("laptop", TABLE)
    for name in ("smoke", "cpu", "gpu", "cluster"):
        assert name in str(err.value)


def test_gpu_without_cuda_says_what_to_do(monkeypatch):
    monkeypatch.setattr(profiles, "has_cuda", lambda: False)
    with pytest.raises(ProfileError, match="needs a CUDA GPU.*profile 'cpu'"):
        resolve("gpu", TABLE)


def test_cluster_without_slurm_says_what_to_do(monkeypatch):
    monkeypatch.setattr(profiles, "has_slurm", lambda: False)
    with pytest.raises(ProfileError, match="sbatch.*local_slurm.sh up --nodes 2"):
        resolve("cluster", TABLE)


def test_default_profile_comes_from_environment(monkeypatch):
    monkeypatch.setenv("HPCAI_PROFILE", "smoke")
    assert resolve(None, TABLE).n == 10
    monkeypatch.setenv("HPCAI_PROFILE", "nonsense")
    with pytest.raises(ProfileError, match="HPCAI_PROFILE"):
        resolve(None, TABLE)
    monkeypatch.delenv("HPCAI_PROFILE")
    assert resolve(None, TABLE).profile == "cpu"


def test_misspelt_override_is_an_error():
    with pytest.raises(ProfileError, match="unknown setting 'repeat'"):
        resolve("cpu", TABLE, repeat=3)


def test_missing_attribute_lists_known_settings():
    with pytest.raises(AttributeError, match="repeats"):
        _ = resolve("cpu", TABLE).size
