//! credloader: sealed systemd credentials into the services that need them.
