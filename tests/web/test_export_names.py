"""Export folder names are checked as a whole string: no trailing newline, no path."""

import pytest

from terramask.core.errors import InputError
from terramask.web.export import check_name


@pytest.mark.parametrize("name", ["x\n", "a/b", "..", "", ".hidden", "a" * 81, "x\r", "x\n\n"])
def test_bad_names_are_refused(name):
    with pytest.raises(InputError, match="not a plain folder name"):
        check_name(name)


@pytest.mark.parametrize("name", ["x", "roof-1", "field_2.v3", "a" * 80])
def test_plain_names_pass(name):
    assert check_name(name) == name
