"""S3-compatible object storage inside the cluster (SeaweedFS; see docs/decisions)."""
