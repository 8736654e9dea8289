"""The daemon runtime: the service and its loop, the change worker, the config watcher, the control socket, sd_notify."""
