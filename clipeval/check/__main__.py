from clipeval.check.gate import main

main()
