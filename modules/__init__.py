"""Reusable Pulumi components. None of them reads config or knows which platform it runs on."""
