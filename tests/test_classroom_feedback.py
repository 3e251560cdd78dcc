"""The feedback preprocessor cuts hidden tests out of source and tracebacks (rendered feedback of
real chapters is checked in tests/test_classroom.py)."""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_output

from genlab.classroom.feedback import PLACEHOLDER, HideHiddenTests, hidden_lines, strip_hidden

SOURCE = (
    "check.allclose('f(1)', f(1), 2.0)\n"
    "### BEGIN HIDDEN TESTS\n"
    "from genlab import primer\n"
    "check.allclose('f(7)', f(7), primer.f(7))\n"
    "### END HIDDEN TESTS"
)


def test_strip_hidden_keeps_visible_checks_and_marks_the_cut():
    stripped, found = strip_hidden(SOURCE)
    assert found
    assert stripped == "check.allclose('f(1)', f(1), 2.0)\n" + PLACEHOLDER
    assert strip_hidden("x = 1") == ("x = 1", False)
    assert hidden_lines(SOURCE) == [
        "from genlab import primer",
        "check.allclose('f(7)', f(7), primer.f(7))",
    ]


def test_preprocessor_shortens_tracebacks_that_quote_hidden_code():
    cell = new_code_cell(SOURCE)
    cell.outputs = [
        new_output(
            "error", ename="CheckError", evalue="f(7): got 1, expected 14",
            traceback=["----> 4 check.allclose('f(7)', f(7), primer.f(7))", "CheckError: ..."],
        )
    ]  # fmt: skip
    cell, _ = HideHiddenTests().preprocess_cell(cell, {}, 0)
    assert "primer.f(7)" not in cell.source
    assert cell.outputs[0]["traceback"] == ["CheckError: f(7): got 1, expected 14"]
    plain = new_code_cell("1 / 0")
    plain.outputs = [new_output("error", ename="ZeroDivisionError", evalue="", traceback=["a"])]
    assert HideHiddenTests().preprocess_cell(plain, {}, 0)[0].outputs[0]["traceback"] == ["a"]
