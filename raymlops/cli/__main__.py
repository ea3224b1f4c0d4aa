from raymlops.cli import main

main()
