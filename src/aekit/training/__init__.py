"""Training: the in-memory loop, how a step is computed, stopping and resuming, several processes."""
