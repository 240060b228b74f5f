"""``python -m medsynbench <command> ...`` — the same as the ``medsynbench`` console script."""
from medsynbench.benchmark.cli import main

if __name__ == "__main__":
    main()
