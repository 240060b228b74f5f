from medsynbench.benchmark.cli import main

main()
