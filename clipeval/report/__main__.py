from clipeval.report.cli import main

main()
