"""Per-user next-day hourly electricity consumption forecast (K-Means profiles + Random Forest)."""
