"""``python -m gridwatch`` runs the command line."""

from gridwatch.cli import main

if __name__ == "__main__":
    main()
