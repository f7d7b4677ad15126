"""The ``microturn`` console command."""
