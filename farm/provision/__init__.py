"""Building what emulated devices need (sysroots), cached and shared across runs."""
