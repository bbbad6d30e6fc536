from flatvol.cli import main

main()
