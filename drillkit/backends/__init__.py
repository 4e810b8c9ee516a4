"""Stack backends: where and how the services of a stack run."""
