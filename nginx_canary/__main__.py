from nginx_canary.cli import main

main()
