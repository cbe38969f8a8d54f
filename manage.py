#!/usr/bin/env python
"""Django's command-line utility for ChatNexus."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatnexus.settings")
    # a value the settings refuse: one line naming it, exit status 2 (not Django's traceback)
    from chatnexus.checks import settings_or_exit

    settings_or_exit()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
