from drillkit.cli import main

main()
