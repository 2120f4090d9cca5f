from posefeed.cli import main

main()
