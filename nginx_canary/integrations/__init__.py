"""What the daemon tells the world and asks it: Prometheus metrics, webhooks, gates and HTTP checks."""
