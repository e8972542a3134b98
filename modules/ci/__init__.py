"""CI support the stacks provision: in-cluster GitHub runners and keyless cloud identities."""
