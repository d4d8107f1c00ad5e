"""A replica's traceback text comes back naming the kernel's made-up file; it is shown as IPython shows cells."""

from __future__ import annotations

from serve_nb.core.cell_traceback import CellSource, cell_traceback, short_error

CELL = ["class Broken:", "    def __init__(self):", "        print('loading')",
        "        raise RuntimeError('weights not found')"]
REMOTE = """Deployment 'Broken' failed to deploy:
The replica constructor failed 3 times; giving up. Last error:
Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/lib.py", line 10, in build
    obj = cls()
          ^^^^^
  File "/tmp/ipykernel_4242/123456.py", line 4, in __init__
  File "/usr/lib/python3/site-packages/other.py", line 3, in helper
    raise
RuntimeError: weights not found"""


def locate(name: str) -> CellSource | None:
    return CellSource(7, CELL) if name == "/tmp/ipykernel_4242/123456.py" else None


def test_cell_frames_are_labelled_cell_in_n_line_l_with_the_cells_lines_and_other_frames_dropped():
    text = cell_traceback(REMOTE, locate)
    assert text == (
        "Deployment 'Broken' failed to deploy:\n"
        "The replica constructor failed 3 times; giving up. Last error:\n"
        "Cell In[7], line 4, in __init__\n"
        "      2     def __init__(self):\n"
        "      3         print('loading')\n"
        "----> 4         raise RuntimeError('weights not found')\n"
        "\n"
        "RuntimeError: weights not found"
    )
    assert short_error(text) == "RuntimeError: weights not found"


def test_a_traceback_naming_no_cell_stays_as_it_was():
    assert cell_traceback(REMOTE, lambda name: None) == REMOTE


def test_chained_exceptions_keep_their_separator_and_both_messages():
    chained = ('Traceback (most recent call last):\n  File "/tmp/ipykernel_4242/123456.py", line 1, in <module>\n'
               "KeyError: 'w'\n\nThe above exception was the direct cause of the following exception:\n\n"
               'Traceback (most recent call last):\n  File "/tmp/ipykernel_4242/123456.py", line 4, in __init__\n'
               "RuntimeError: weights not found")
    text = cell_traceback(chained, locate)
    assert text.count("Cell In[7]") == 2 and "Cell In[7], line 1\n----> 1 class Broken:" in text
    assert "direct cause" in text and text.endswith("RuntimeError: weights not found")
    assert short_error(text) == "RuntimeError: weights not found"
