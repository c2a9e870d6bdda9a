#!/usr/bin/env python3
"""Print the configuration reference (every setting, its default and help) as a Markdown table.

The README's configuration reference is this script's output; tests/test_settings.py fails when a
setting is missing from the README."""

from shadoweval.proxy.settings import settings_table


def main() -> None:
    print("| setting | default | meaning |")
    print("|---|---|---|")
    for section, key, default, help_text in settings_table():
        name = f"`[[{section}]] {key}`" if section in ("candidates", "intents", "evaluators") else f"`[{section}] {key}`"
        shown = "(required)" if default is None else f"`{default!r}`".replace("|", "\\|")
        print(f"| {name} | {shown} | {help_text.replace('|', '/')} |")


if __name__ == "__main__":
    main()
