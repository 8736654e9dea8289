"""Each rollout run's time series and its one-page HTML report."""
