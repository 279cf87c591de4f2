"""Print the README's settings table from the Settings model and the CLI's flags.

Usage: .venv/bin/python utils/settings_table.py  (paste the output under "## Configuration").
"""

from __future__ import annotations

from batch_processor.cli.main import build_parser
from batch_processor.settings import ENV_PREFIX, Settings


def flags() -> dict[str, str]:
    """Setting name -> the flag that sets it."""
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    return {
        action.dest: action.option_strings[0]
        for action in run._actions
        if action.option_strings and action.dest in Settings.model_fields
    }


def main() -> None:
    """Print the table."""
    by_setting = flags()
    print("| setting | env variable | flag | default | meaning |")
    print("|---|---|---|---|---|")
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        shown = "unset" if default is None else str(getattr(default, "value", default))
        flag = f"`{by_setting[name]}`" if name in by_setting else ""
        env = f"{ENV_PREFIX}{name.upper()}"
        print(f"| `{name}` | `{env}` | {flag} | `{shown}` | {field.description or ''} |")


if __name__ == "__main__":
    main()
