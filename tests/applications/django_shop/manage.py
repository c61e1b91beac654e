#!/usr/bin/env python
"""The Django project of tests/applications/test_django.py, as `django-admin startproject` lays one out."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
