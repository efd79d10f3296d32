"""sparseadv._validation: one convention (InputTypeError for a wrong type, InputError for a wrong
value, each naming the argument), also at the edges of the number types (issue 15 item 7)."""
import numpy as np
import pytest

from sparseadv import _validation as v
from sparseadv.errors import InputError, InputTypeError, SparseAdvError


def test_error_classes_are_the_builtins_and_the_projects():
    assert issubclass(InputError, ValueError) and issubclass(InputError, SparseAdvError)
    assert issubclass(InputTypeError, TypeError) and issubclass(InputTypeError, SparseAdvError)


@pytest.mark.parametrize("name", ["b", "eps", "lr"])
@pytest.mark.parametrize("value", [10 ** 400, -(10 ** 400)], ids=["1e400", "-1e400"])
def test_check_real_int_too_big_for_a_float_is_a_value_error(name, value):
    with pytest.raises(InputError, match=rf"^{name} must be a finite real number") as err:
        v.check_real(name, value)
    assert "OverflowError" not in str(err.value) and len(str(err.value)) < 150


@pytest.mark.parametrize("value,exc", [(np.nan, InputError), (np.inf, InputError),
                                       ("1", InputTypeError), (True, InputTypeError),
                                       (None, InputTypeError), (1j, InputTypeError),
                                       (np.array([1.0]), InputTypeError)])
def test_check_real_bad(value, exc):
    with pytest.raises(exc, match=r"^x must"):
        v.check_real("x", value)


def test_check_real_bounds():
    assert v.check_real("x", 3, low=0, high=3) == 3.0
    assert v.check_real("x", np.array(2.5)) == 2.5
    with pytest.raises(InputError, match=r"^x must be <= 3"):
        v.check_real("x", 3.5, high=3)
    with pytest.raises(InputError, match=r"^x must be > 0"):
        v.check_real("x", 0, low=0, low_inclusive=False)


@pytest.mark.parametrize("value,exc", [(0, InputError), (-1, InputError), (2 ** 63, InputError),
                                       (10 ** 400, InputError), (2.0, InputTypeError),
                                       (True, InputTypeError), ("3", InputTypeError)],
                         ids=["0", "-1", "2**63", "1e400", "2.0", "True", "'3'"])
def test_check_positive_int_bad(value, exc):
    with pytest.raises(exc, match=r"^leaf_size must be a positive integer"):
        v.check_positive_int("leaf_size", value)


def test_check_positive_int_largest():
    assert v.check_positive_int("k", 2 ** 63 - 1) == 2 ** 63 - 1
    assert v.check_positive_int("k", np.int64(5)) == 5


@pytest.mark.parametrize("seed,exc", [(-1, InputError), (True, InputTypeError),
                                      (1.0, InputTypeError), ("s", InputTypeError)])
def test_check_seed_names_the_argument(seed, exc):
    with pytest.raises(exc, match=r"^seed must be None, a non-negative integer"):
        v.check_seed(seed)
    with pytest.raises(exc, match=r"^attack_seed must be"):
        v.check_seed(seed, "attack_seed")


def test_check_seed_good():
    g = np.random.default_rng(0)
    assert v.check_seed(g) is g and v.check_seed(None) is None and v.check_seed(np.uint8(3)) == 3


def test_check_allocation_message_names_argument_and_bytes():
    with pytest.raises(InputError) as err:
        v.check_allocation("m, d", 8 * 2 ** 31 * 2 ** 31, "the weights W")
    msg = str(err.value)
    assert msg.startswith("m, d asks for 36,893,488,147,419,103,232 bytes for the weights W (")
    assert msg.endswith("; choose a smaller m, d")
    assert "available" in msg


def test_check_allocation_limits(monkeypatch):
    assert v.check_allocation("n", 0) == 0
    assert v.check_allocation("n", 1024) == 1024
    with pytest.raises(InputError, match="negative size"):
        v.check_allocation("n", -8)
    with pytest.raises(InputError, match=r"asks for .* bytes"):
        v.check_allocation("n", 10 ** 40)          # far beyond 2**64
    # with the available memory unknown, only sizes beyond 2**62 are refused
    monkeypatch.setattr(v, "available_memory", lambda: None)
    assert v.check_allocation("n", 2 ** 40) == 2 ** 40
    with pytest.raises(InputError, match="available memory unknown"):
        v.check_allocation("n", 2 ** 62 + 1)
    monkeypatch.setattr(v, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"1,001 bytes for the arrays it needs \(1,000 available\)"):
        v.check_allocation("n", 1001)
