"""Analysis of trained models and runs: tables, plots, cost."""
