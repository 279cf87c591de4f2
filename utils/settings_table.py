"""Print the README's settings table, generated from the Settings model.

Usage: .venv/bin/python utils/settings_table.py  (it goes between the settings-table markers
of the README; ``tests/test_docs.py`` fails while the README differs).
"""

from __future__ import annotations

from batch_processor.cli.flags import settings_table

if __name__ == "__main__":
    print(settings_table(), end="")
