"""Demo workloads the platform deploys: training code and model APIs (energy, neo, mnist)."""
