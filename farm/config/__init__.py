"""devices.yaml and suite files, validated into dataclasses (pure data)."""
