"""Hazardous near-Earth-object classifier (experiment `Hazardous_NEOs`, registered model `NEOs`)."""
