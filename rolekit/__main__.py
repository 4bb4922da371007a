from rolekit.cli.app import main

main()
