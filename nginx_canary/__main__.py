from nginx_canary.cli.app import main

main()
