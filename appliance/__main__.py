from appliance.shell.cli import main

main()
