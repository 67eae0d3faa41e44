"""``python -m objstore``: the command line."""

from objstore.cli.main import main

if __name__ == "__main__":
    main()
