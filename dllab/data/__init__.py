"""Data that needs no download: real data bundled with scikit-learn, and honest synthetic sets."""
