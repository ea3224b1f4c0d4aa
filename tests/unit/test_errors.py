from __future__ import annotations

import pickle

import pytest

from raymlops import errors


@pytest.mark.parametrize("cls", [getattr(errors, n) for n in errors.__all__])
def test_every_error_survives_pickling(cls):
    exc = cls("something failed at file.csv row 3", extra="detail")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == str(exc)
    assert back.details["extra"] == "detail"
    assert isinstance(back, errors.RaymlopsError)


def test_validation_error_keeps_report_path():
    exc = errors.DataValidationError("bad", report_path="/tmp/r.json")
    assert pickle.loads(pickle.dumps(exc)).report_path == "/tmp/r.json"
