"""Fleet rollouts: hosts coordinating one rollout through etcd (store, and later membership, election, barrier)."""
