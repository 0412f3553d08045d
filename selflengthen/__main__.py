from selflengthen.cli import main

main()
