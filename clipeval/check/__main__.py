from clipeval.check.cli import main

main()
