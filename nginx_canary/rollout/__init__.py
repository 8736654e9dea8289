"""The rollout engine: the checks (analysis), the state machine, its store and its hands on nginx."""
