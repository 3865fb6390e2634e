"""The shell: the composition roots (the CLI by command group, the daemon), the console's way to a
running daemon, and the host's services (mDNS, sd_notify)."""
