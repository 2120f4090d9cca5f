"""The optional numba switch (`posefeed.targets._numba`): which path a codec runs."""
import pytest

from posefeed.targets import _numba


def test_numpy_is_always_allowed():
    assert _numba.use_kernel("numpy") is False


def test_auto_follows_whether_numba_imports():
    assert _numba.use_kernel("auto") is (_numba.numba_or_none() is not None)


def test_required_numba_without_it_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_numba, "numba_or_none", lambda: None)
    assert _numba.use_kernel("auto") is False
    assert _numba.cpu_kernel(lambda x: x) is None
    with pytest.raises(ImportError, match=r"posefeed\[cpu\]"):
        _numba.use_kernel("numba")


def test_unknown_kernel_name_is_refused():
    with pytest.raises(ValueError, match="numpy"):
        _numba.use_kernel("fortran")


def _add_one(x):
    return x + 1


def test_compiled_kernel_runs_and_releases_the_gil():
    pytest.importorskip("numba")
    k = _numba.cpu_kernel(_add_one)
    assert k(41) == 42
    assert k.targetoptions.get("nogil") is True
