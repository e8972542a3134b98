"""PostgreSQL for the platform: in-cluster here; Cloud SQL/RDS live with their platforms."""
