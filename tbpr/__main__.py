"""`python -m tbpr ...`: the same CLI as the `tbpr` console script (what `torchrun ... -m tbpr` will run)."""

from tbpr.cli import main

if __name__ == "__main__":
    main()
