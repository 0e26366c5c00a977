from flarecli.cli import main

main()
