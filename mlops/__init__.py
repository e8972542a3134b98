"""The `mlops` command: offline plan, validation and other tools around the Pulumi program."""
