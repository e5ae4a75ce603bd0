"""Print or rewrite the README's support table from `vidaccel.supported_models()`.

    python scripts/support_table.py            # print the table
    python scripts/support_table.py --write    # regenerate it in README.md (between its markers)

tests/test_support.py fails when README.md and `supported_models()` disagree.
"""

from __future__ import annotations

import argparse
import pathlib

from vidaccel.support import replace_table, support_table_markdown

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {README.name}")
    args = parser.parse_args()
    if args.write:
        README.write_text(replace_table(README.read_text()))
        print(f"updated {README}")
    else:
        print(support_table_markdown())


if __name__ == "__main__":
    main()
