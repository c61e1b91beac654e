"""`python -m skiplock …` is the `skiplock` command."""

from skiplock.cli import main

if __name__ == "__main__":
    main()
