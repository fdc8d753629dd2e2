"""Analysis of run records: tidy tables, the paper's figures and claims, the replication report."""
