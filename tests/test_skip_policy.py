"""tests/skip_policy.py: the checker `.ci/run` applies to the junit XML of a test run."""

from __future__ import annotations

import skip_policy

CASE = '<testcase classname="tests.test_x" name="{name}">{body}</testcase>'


def _junit(tmp_path, *cases: str):
    path = tmp_path / "junit.xml"
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(cases)}</testsuite></testsuites>')
    return str(path)


def test_allowed_skip_passes(tmp_path, capsys):
    xml = _junit(tmp_path, CASE.format(name="test_gpu", body='<skipped type="pytest.skip" message="tests/test_x.py:3: no CUDA device: needs a GPU"/>'),
                 CASE.format(name="test_ok", body=""))
    assert skip_policy.main(xml) == 0
    out = capsys.readouterr().out
    assert "1 skipped" in out and "test_gpu: tests/test_x.py:3: no CUDA device" in out


def test_skip_outside_the_list_fails_and_is_named(tmp_path, capsys):
    xml = _junit(tmp_path, CASE.format(name="test_model", body='<skipped type="pytest.skip" message="nnraw.models not in this build yet"/>'))
    assert skip_policy.main(xml) == 1
    assert "NOT ALLOWED  tests.test_x::test_model: nnraw.models not in this build yet" in capsys.readouterr().out


def test_no_skips_and_xfails_pass(tmp_path, capsys):
    xml = _junit(tmp_path, CASE.format(name="test_a", body=""),
                 CASE.format(name="test_strict", body='<skipped type="pytest.xfail" message="network too weak"/>'))
    assert skip_policy.main(xml) == 0
    assert "0 skipped" in capsys.readouterr().out
