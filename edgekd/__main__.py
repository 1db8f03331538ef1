"""``python -m edgekd`` (and ``torchrun ... -m edgekd train``) runs the CLI."""

from edgekd.cli import main

if __name__ == "__main__":
    main()
