"""`python -m ssl_bench ...` is the same as the `ssl-bench` command."""

from ssl_bench.cli import main

if __name__ == "__main__":
    main()
