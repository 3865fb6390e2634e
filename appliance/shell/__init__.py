"""The shell: the composition roots (CLI, daemon) and the host's services (mDNS, sd_notify, logging)."""
