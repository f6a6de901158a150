import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ProfileError
from harness.profiles import Profile, format_shapes, parse_shapes


def test_trtexec_syntax():
    assert parse_shapes("image:1x3x224x224,mask:1x128") == {"image": (1, 3, 224, 224), "mask": (1, 128)}
    assert parse_shapes("'input:0':2x3, 'a,b':4") == {"input:0": (2, 3), "a,b": (4,)}


names = st.text("abcdefgh_:,0123", min_size=1, max_size=8).filter(lambda s: "'" not in s)
shapes = st.dictionaries(names, st.lists(st.integers(1, 4096), min_size=0, max_size=5).map(tuple), min_size=1,
                         max_size=4)


@given(shapes)
def test_format_and_parse_round_trip(value):
    assert parse_shapes(format_shapes(value)) == value


@pytest.mark.parametrize("text, problem", [
    ("image:1x3xax4", "positive integers"), ("image:1x0", ">= 1"), (":1x3", "no input name"),
    ("1x3", "no input name"), ("x:1,x:2", "given twice"), ("", "expected"),
])
def test_malformed_strings_are_refused(text, problem):
    with pytest.raises(ProfileError, match=problem):
        parse_shapes(text, where="profile 'p'")


def test_profile_order_and_checks():
    p = Profile.from_strings("dyn", min="x:1x3", opt="x:8x3", max="x:32x3")
    assert not p.fixed and p.opt == {"x": (8, 3)}
    p.check({"x": (32, 3)})
    with pytest.raises(ProfileError, match=r"input 'x' has shape 33x3, outside profile 'dyn' \(min 1x3, max 32x3\)"):
        p.check({"x": (33, 3)}, model="m")
    with pytest.raises(ProfileError, match="min <= opt <= max"):
        Profile.from_strings("bad", min="x:8x3", opt="x:1x3", max="x:32x3")
    fixed = Profile.from_strings("f", shapes="x:8x3")
    assert fixed.fixed and fixed.min == fixed.max == {"x": (8, 3)}
    assert fixed.key() != p.key()
