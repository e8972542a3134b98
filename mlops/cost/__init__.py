"""`mlops cost`: monthly list-price cost of a stack per resource, on GKE, EKS and on-prem.

Reads the stack through the project's own config loader (platform defaults included), maps its
needs (CPU, memory, storage, HA, database size, traffic) onto each target, and prices them with
the versioned files in `pricing/` plus a usage file for what config cannot know.
"""
