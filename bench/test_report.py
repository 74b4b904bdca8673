"""Checks of bench/report.py that need no benchmark run (run by scripts/test):
a page rewritten from a recorded result keeps its hand-kept section, and a
page without one gets none.

    python3 bench/test_report.py
"""

import glob
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KEPT = "<!-- kept: begin -->\n## Hand-kept\n\nfigure 42\n<!-- kept: end -->"


def render(page_before):
    result = sorted(glob.glob(os.path.join(HERE, "results", "*Z.json")))[-1]
    with tempfile.TemporaryDirectory() as d:
        page = os.path.join(d, "benchmarks.md")
        if page_before is not None:
            open(page, "w").write(page_before)
        subprocess.run([sys.executable, os.path.join(HERE, "report.py"), result,
                        os.path.join(d, "out.json"), page], check=True)
        return open(page).read()


def main():
    kept = render("# Benchmarks\n\nold generated text\n\n" + KEPT + "\n\n## Plots\n")
    assert KEPT in kept, "the hand-kept section was dropped"
    assert "old generated text" not in kept, "the generated part was not rewritten"
    assert "<!-- kept" not in render(None), "a section appeared from nowhere"
    print("bench/report.py: hand-kept sections carried over")


if __name__ == "__main__":
    main()
